"""The shm section: what system shared memory saves a local client, against raw contents.

A 3x224x224 FP32 image (602,112 bytes) goes to a CLI gateway either in the request's
raw_input_contents or in a registered shared-memory region (Triton's extension):
once to a model that answers a small output (the channel means), once to an identity
model whose output is the image again (raw back in the response, or written to a
second region). Every case runs in the same gateway, in turns, one caller; the
client's own work counts: with shared memory it writes the image into the region
(and reads the identity's output out of it) on every call.

Run alone: `python -m bench.shm [--seconds S]` prints the table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import BenchConfig
from bench.gateway_process import gateway
from bench.progress import log
from bench.report import Column, Section, num

IMAGE = (1, 3, 224, 224)
SECONDS_PER_CASE = 2.0
ROUNDS = 3  # each case runs this many turns, alternating, to spread a busy machine's noise


def _models(repository: Path) -> None:
    """`means`: [1, 3, 224, 224] -> [1, 3]; `echo`: the image back."""
    import onnx
    from onnx import TensorProto, helper

    shape = list(IMAGE)
    graphs = {
        "means": helper.make_graph(
            [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)],
            "means",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        ),
        "echo": helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "echo",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        ),
    }
    for name, graph in graphs.items():
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        (repository / name / "1").mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(repository / name / "1" / "model.onnx"))


def _measure(call: Callable[[], Any], seconds: float) -> list[float]:
    for _ in range(20):
        call()  # warm the path (and the router's measurements) first
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def measure(url: str, seconds: float) -> list[dict[str, Any]]:
    """Median latency (and wire bytes) of each case, in one gateway at `url`."""
    import grpc

    from infergate.protocol import inference_pb2 as pb
    from infergate.protocol import inference_pb2_grpc as pb_grpc

    image = np.random.default_rng(0).random(IMAGE, dtype=np.float32)
    size = image.nbytes
    regions = [shared_memory.SharedMemory(create=True, size=size) for _ in range(2)]
    channel = grpc.insecure_channel(url, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        for name, region in zip(("bench_in", "bench_out"), regions, strict=True):
            stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name=name))
            stub.SystemSharedMemoryRegister(
                pb.SystemSharedMemoryRegisterRequest(
                    name=name, key="/" + region.name, offset=0, byte_size=size
                )
            )
        shm_in = np.ndarray(IMAGE, np.float32, regions[0].buf)
        shm_out = np.ndarray(IMAGE, np.float32, regions[1].buf)

        def request(model: str, in_shm: bool, out_shm: bool) -> Any:
            message = pb.ModelInferRequest(model_name=model)
            tensor = message.inputs.add(name="x", datatype="FP32", shape=IMAGE)
            if in_shm:
                tensor.parameters["shared_memory_region"].string_param = "bench_in"
                tensor.parameters["shared_memory_byte_size"].int64_param = size
            output = message.outputs.add(name="y")
            if out_shm:
                output.parameters["shared_memory_region"].string_param = "bench_out"
                output.parameters["shared_memory_byte_size"].int64_param = size
            return message

        def raw_call(model: str) -> Callable[[], Any]:
            def call() -> Any:
                message = request(model, False, False)
                message.raw_input_contents.append(image.tobytes())
                response = stub.ModelInfer(message)
                return np.frombuffer(response.raw_output_contents[0], np.float32)

            return call

        def shm_call(model: str, out_shm: bool) -> Callable[[], Any]:
            message = request(model, True, out_shm)

            def call() -> Any:
                shm_in[...] = image  # the client puts its tensor where the gateway reads it
                response = stub.ModelInfer(message)
                if out_shm:
                    return shm_out.copy()
                return np.frombuffer(response.raw_output_contents[0], np.float32)

            return call

        cases = {
            ("means (small output)", "raw contents"): (
                raw_call("means"),
                request("means", False, False),
            ),
            ("means (small output)", "shared memory in"): (
                shm_call("means", False),
                request("means", True, False),
            ),
            ("echo (image back)", "raw contents"): (
                raw_call("echo"),
                request("echo", False, False),
            ),
            ("echo (image back)", "shared memory in and out"): (
                shm_call("echo", True),
                request("echo", True, True),
            ),
        }
        np.testing.assert_array_equal(
            cases[("echo (image back)", "shared memory in and out")][0](), image
        )
        np.testing.assert_array_equal(
            cases[("echo (image back)", "raw contents")][0]().reshape(IMAGE), image
        )
        times: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
        for _ in range(ROUNDS):
            for case, (call, _) in cases.items():
                times[case] += _measure(call, seconds / ROUNDS)
        rows = []
        for (model, transport), (_, message) in cases.items():
            wire = message.ByteSize() + (size if transport == "raw contents" else 0)
            p50 = float(np.median(times[(model, transport)])) * 1e6
            baseline = float(np.median(times[(model, "raw contents")])) * 1e6
            rows.append(
                {
                    "model": model,
                    "transport": transport,
                    "request_bytes": wire,
                    "calls": len(times[(model, transport)]),
                    "p50_us": p50,
                    "saved_us": baseline - p50,
                    "ratio": p50 / baseline,
                }
            )
            log(f"shm: {model}, {transport}: p50 {p50:.0f} us")
        return rows
    finally:
        for name in ("bench_in", "bench_out"):
            stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name=name))
        channel.close()
        for region in regions:
            region.close()
            region.unlink()


def _section() -> Section:
    return Section(
        key="shm",
        title="System shared memory against raw contents, a 3x224x224 FP32 image",
        description=(
            "One caller on the gateway's machine, gRPC over loopback, one CLI gateway; "
            "latency per call (client side, its copy into and out of the region included), "
            f"{ROUNDS} alternating turns per case. request bytes: the message as sent."
        ),
        columns=[
            Column("model", "model"),
            Column("tensors", "transport"),
            Column("request bytes", "request_bytes", num(0)),
            Column("calls", "calls", num(0)),
            Column("p50 (us)", "p50_us", num(0)),
            Column("saved (us)", "saved_us", num(0)),
            Column("vs raw", "ratio", lambda v: f"{v:.2f}x"),
        ],
    )


def shm_section(
    config: BenchConfig, workdir: Path, seconds: float = SECONDS_PER_CASE * ROUNDS
) -> Section:
    section = _section()
    repository = workdir / "shm-repository"
    _models(repository)
    with gateway(repository, workdir / "shm-gateway.log", serve_args=("--no-gpu",)) as gw:
        section.rows = measure(gw.url, seconds)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS_PER_CASE * ROUNDS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        section = _section()
        _models(workdir / "repository")
        with gateway(
            workdir / "repository", workdir / "gateway.log", serve_args=("--no-gpu",)
        ) as gw:
            section.rows = measure(gw.url, args.seconds)
    print(section.markdown())


if __name__ == "__main__":
    main()
