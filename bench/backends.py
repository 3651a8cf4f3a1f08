"""Each backend on each demo model, in process: latency percentiles and throughput.

The seeds' advice is to benchmark a model on every option before choosing one; this
does that for the runtimes themselves, with no gRPC or batching in the way. Each
model is loaded the way the gateway loads it (config checked, names mapped, warm-up
run), pinned to one backend at a time, then called at each batch size from
`concurrency` threads for `duration_s`.

    python -m bench.backends [--repository models/repository] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from bench.config import BenchConfig
from bench.report import Column, Section, num
from infergate.backends.base import Backend, BackendOptions
from infergate.backends.discovery import discover
from infergate.gateway.core.loader import load_model
from infergate.gateway.core.repository import ModelSource, read_model
from infergate.protocol import model_config_pb2 as mc
from infergate.schema import datatypes
from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import VARIABLE, ModelSpec

DEFAULT_REPOSITORY = Path(__file__).resolve().parents[1] / "models" / "repository"
COLUMNS = ("backend", "device", "model", "batch", "p50_ms", "p99_ms", "rows_per_s", "calls")


def backend_table(
    repository: Path,
    models: Sequence[str] = ("digits", "cnn"),
    batch_sizes: Sequence[int] = (1, 8, 32),
    *,
    backends: Mapping[str, Backend] | None = None,
    options: BackendOptions | None = None,
    concurrency: int = 1,
    duration_s: float = 1.0,
    min_calls: int = 20,
) -> list[dict[str, object]]:
    """One row per backend x model x batch size that could run, in that order.

    Rows: backend, model, device, batch, p50_ms, p99_ms (per call), rows_per_s
    (all threads together), calls. A backend that cannot load a model (no artifact
    for it, say) is left out of the table with a line on stderr.
    """
    found = discover().backends if backends is None else backends
    options = options or BackendOptions()
    rows: list[dict[str, object]] = []
    for backend_name, backend in found.items():
        for model in models:
            source = pinned(read_model(repository, model), backend_name)
            try:
                loaded = load_model(source, {backend_name: backend}, options, max(batch_sizes))
            except ModelLoadError as exc:
                print(f"[bench] {backend_name}/{model}: skipped: {exc}", file=sys.stderr)
                continue
            runtime, spec = loaded.runtime, loaded.spec
            try:
                for batch in batch_sizes:
                    inputs = sample_inputs(spec, batch)
                    call = functools.partial(runtime.infer, inputs)
                    latencies_ns, wall_s = measure(call, concurrency, duration_s, min_calls)
                    rows.append(
                        {
                            "backend": backend_name,
                            "model": model,
                            "device": runtime.device,
                            "batch": batch,
                            "p50_ms": float(np.percentile(latencies_ns, 50)) / 1e6,
                            "p99_ms": float(np.percentile(latencies_ns, 99)) / 1e6,
                            "rows_per_s": batch * len(latencies_ns) / wall_s,
                            "calls": len(latencies_ns),
                        }
                    )
            finally:
                runtime.close()
    return rows


def pinned(source: ModelSource, backend: str) -> ModelSource:
    """The same model with its config pinned to one backend (nothing written to disk)."""
    config = mc.ModelConfig()
    if source.config is not None:
        config.CopyFrom(source.config)
    config.backend = backend
    config.platform = ""  # a Triton platform names a backend too: let `backend` speak
    del config.allowed_backends[:]
    return dataclasses.replace(source, config=config)


def sample_inputs(spec: ModelSpec, batch: int) -> dict[str, np.ndarray]:
    """Random inputs of the model's shapes, `batch` rows (variable dims other than the
    batch dim are taken as 1)."""
    rng = np.random.default_rng(0)
    inputs = {}
    for i, tensor in enumerate(spec.inputs):
        shape = tuple(
            batch if (d == VARIABLE and k == 0 and spec.max_batch_size) else max(d, 1)
            for k, d in enumerate(tensor.shape)
        )
        dtype = datatypes.from_name(tensor.datatype).numpy
        inputs[tensor.name] = (
            rng.random(shape, dtype=np.float32).astype(dtype)
            if dtype.kind == "f"
            else np.full(shape, i % 2, dtype=dtype)
        )
    return inputs


def measure(
    call: Callable[[], object], concurrency: int, duration_s: float, min_calls: int
) -> tuple[np.ndarray, float]:
    """Per-call latencies (ns) from `concurrency` threads calling until time is up,
    and the wall time they took together."""
    for _ in range(3):  # warm-up: first calls at a new shape allocate
        call()
    per_thread = max(1, -(-min_calls // concurrency))
    latencies: list[list[int]] = [[] for _ in range(concurrency)]
    start_line = threading.Barrier(concurrency + 1)
    deadline: list[float] = [0.0]

    def worker(out: list[int]) -> None:
        start_line.wait()
        while len(out) < per_thread or time.perf_counter() < deadline[0]:
            started = time.perf_counter_ns()
            call()
            out.append(time.perf_counter_ns() - started)

    threads = [threading.Thread(target=worker, args=(out,)) for out in latencies]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline[0] = started + duration_s
    start_line.wait()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    return np.array([x for out in latencies for x in out], dtype=np.int64), wall_s


def markdown(rows: Sequence[Mapping[str, object]]) -> str:
    """The rows as a markdown table."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
        return str(value)

    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|"
        + "|".join("---" if c in ("backend", "device", "model") else "---:" for c in COLUMNS)
        + "|",
    ]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--models", nargs="+", default=["digits", "cnn"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--backends", nargs="+", help="default: every installed backend")
    parser.add_argument("--concurrency", type=int, default=1, help="threads calling at once")
    parser.add_argument("--duration-s", type=float, default=1.0, help="per cell")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: default)")
    parser.add_argument("--no-gpu", action="store_true", help="keep onnxruntime on the CPU")
    parser.add_argument(
        "--extra", nargs="*", default=[], metavar="KEY=VALUE", help="backend settings"
    )
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.extra)
    options = BackendOptions(intra_op_threads=args.threads, use_gpu=not args.no_gpu, extra=extra)
    found = discover(args.backends or ()).backends
    rows = backend_table(
        args.repository,
        args.models,
        args.batch_sizes,
        backends=found,
        options=options,
        concurrency=args.concurrency,
        duration_s=args.duration_s,
    )
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def backends_section(config: BenchConfig, workdir: Path) -> Section:
    """`make bench`'s per-backend table: every backend on digits and cnn, in process."""
    section = Section(
        key="backends",
        title="Each backend in process (no gRPC, no batching)",
        description=(
            "Each demo model loaded the gateway's way and pinned to one backend at a time, "
            "called from one thread for 2 s per batch size. Latency per call in ms."
        ),
        columns=[
            Column("backend", "backend"),
            Column("model", "model"),
            Column("batch", "batch"),
            Column("p50 (ms)", "p50_ms", num(3)),
            Column("p99 (ms)", "p99_ms", num(3)),
            Column("rows/s", "rows_per_s", num(0)),
        ],
    )
    try:
        section.rows.extend(backend_table(config.repository, duration_s=2.0))
    except Exception as exc:  # reported in the table, not a crash of the whole run
        section.notes.append(f"**backend table failed:** {type(exc).__name__}: {exc}")
    return section
