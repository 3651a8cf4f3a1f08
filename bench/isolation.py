"""The isolation section: what running a backend in a process of its own would cost.

A runtime whose native code crashes (a segfault in a kernel, an abort in a
provider) takes the whole gateway down with it; a worker process per backend would
contain it, as Triton's python backend does. The price is a hand-off per batch:
inputs into shared memory, a message to the worker, its outputs back. This section
measures that price against an in-process call on the same onnxruntime session
options, for the demo models at batch 1 and 32, so the decision rests on figures.

The worker here is the leanest design: one shared-memory block each way, sized for
the largest batch, and a pipe carrying only shapes; the caller waits on the pipe.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import BenchConfig
from bench.progress import log
from bench.report import Column, Section, num

MODELS = {"digits": (64,), "cnn": (3, 32, 32), "mlp_large": (1024,)}
BATCHES = (1, 32)
SECONDS_PER_CASE = 2.0
BLOCK_BYTES = 64 * 1024 * 1024


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _worker(path: str, requests: Connection, inputs_name: str, outputs_name: str) -> None:
    """Runs in the child: read shapes, run, write outputs, answer with their shapes."""
    session = _session(Path(path))
    input_name = session.get_inputs()[0].name
    inputs_block, outputs_block = SharedMemory(inputs_name), SharedMemory(outputs_name)
    try:
        while (shape := requests.recv()) is not None:
            count = int(np.prod(shape))
            x = np.ndarray(shape, np.float32, inputs_block.buf[: count * 4])
            y = session.run(None, {input_name: x})[0]
            out = np.ndarray(y.shape, np.float32, outputs_block.buf[: y.nbytes])
            out[...] = y
            requests.send(y.shape)
            del x, out
    finally:
        inputs_block.close()
        outputs_block.close()


class WorkerProcess:
    """A session in a child process, called through shared memory."""

    def __init__(self, path: Path) -> None:
        self.inputs = SharedMemory(create=True, size=BLOCK_BYTES)
        self.outputs = SharedMemory(create=True, size=BLOCK_BYTES)
        context = mp.get_context("spawn")
        self.pipe, child_end = context.Pipe()
        self.process = context.Process(
            target=_worker, args=(str(path), child_end, self.inputs.name, self.outputs.name)
        )
        self.process.start()

    def infer(self, x: np.ndarray) -> np.ndarray:
        np.ndarray(x.shape, np.float32, self.inputs.buf[: x.nbytes])[...] = x
        self.pipe.send(x.shape)
        shape = self.pipe.recv()
        count = int(np.prod(shape))
        return np.ndarray(shape, np.float32, self.outputs.buf[: count * 4]).copy()

    def close(self) -> None:
        self.pipe.send(None)
        self.process.join(10)
        for block in (self.inputs, self.outputs):
            block.close()
            block.unlink()


def _timed(call: Any, x: np.ndarray) -> list[float]:
    for _ in range(5):
        call(x)
    times = []
    deadline = time.monotonic() + SECONDS_PER_CASE
    while time.monotonic() < deadline:
        started = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - started)
    return times


def _runner(session: Any, name: str) -> Any:
    return lambda x: session.run(None, {name: x})


def isolation_section(config: BenchConfig, workdir: Path) -> Section:
    section = Section(
        key="isolation",
        title="Backend isolation: a worker process per backend, what it costs",
        description=(
            "onnxruntime (CPU, default threads, ORT_ENABLE_ALL) called in process vs the same "
            "session in a child process reached through shared memory and a pipe; one caller, "
            f"{SECONDS_PER_CASE:g} s of calls per case. Latency per call in microseconds."
        ),
        columns=[
            Column("model", "model"),
            Column("batch", "batch"),
            Column("in process p50 (us)", "local_us", num(0)),
            Column("worker p50 (us)", "worker_us", num(0)),
            Column("added (us)", "added_us", num(0)),
            Column("worker / in process", "ratio", lambda v: f"{v:.2f}x"),
        ],
    )
    for model, dims in MODELS.items():
        path = config.repository / model / "1" / "model.onnx"
        if not path.is_file():
            section.notes.append(f"{model}: {path} is missing (make models builds mlp_large)")
            continue
        session = _session(path)
        name = session.get_inputs()[0].name
        worker = WorkerProcess(path)
        try:
            for batch in BATCHES:
                x = np.random.default_rng(0).random((batch, *dims), dtype=np.float32)
                np.testing.assert_allclose(
                    worker.infer(x), session.run(None, {name: x})[0], rtol=1e-5
                )
                local = float(np.median(_timed(_runner(session, name), x))) * 1e6
                remote = float(np.median(_timed(worker.infer, x))) * 1e6
                log(
                    f"isolation: {model} b{batch}: {local:.0f} us here, {remote:.0f} us in a worker"
                )
                section.rows.append(
                    {
                        "model": model,
                        "batch": batch,
                        "local_us": local,
                        "worker_us": remote,
                        "added_us": remote - local,
                        "ratio": remote / local,
                    }
                )
        finally:
            worker.close()
    return section


if __name__ == "__main__":
    import argparse
    import tempfile

    from bench.config import parse_config

    parsed, _ = parse_config(argparse.ArgumentParser(description=__doc__), None, ("isolation",))
    with tempfile.TemporaryDirectory() as tmp:
        print(isolation_section(parsed, Path(tmp)).markdown())
