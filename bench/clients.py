"""Client overhead: infergate's Python client (blocking and asyncio), the raw stub
generated from proto/, and tritonclient, calling the same gateway one call at a time.

Each client runs in a process of its own (tritonclient cannot share one with
infergate's generated protocol code, and a fresh process each keeps them from
disturbing one another), warms up, then makes `calls` sequential ModelInfer calls to
`digits` with one FP32 [1, 64] input, timing each. The digits demo model has the
response cache on, so after the warm-up every answer is a cache hit: the figures are
the client's and the RPC's cost more than the model's.

    python -m bench.clients                      # starts a gateway on models/repository
    python -m bench.clients --url 127.0.0.1:8001 --calls 2000

From another bench section: `compare_clients(url, calls)` gives one ClientFigures per
client; `markdown_table(figures)` formats them. Nothing here imports infergate or
tritonclient at module level: the worker imports only the client it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.gateway_process import gateway
from bench.progress import log

CLIENTS = ("infergate", "infergate-asyncio", "generated-stub", "tritonclient")
MODEL = "digits"
WARMUP_CALLS = 50
WORKER_TIMEOUT_S = 600


@dataclass(frozen=True)
class ClientFigures:
    client: str
    calls: int
    p50_ms: float
    p99_ms: float
    calls_per_s: float


def compare_clients(
    url: str, calls: int = 300, clients: Sequence[str] = CLIENTS, model: str = MODEL
) -> list[ClientFigures]:
    """Each client's figures against the gateway at `url`, one client after the other."""
    figures = []
    for client in clients:
        log(f"clients: {calls} sequential calls with {client}")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.clients",
                "--worker",
                client,
                "--url",
                url,
                "--calls",
                str(calls),
                "--model",
                model,
            ],
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
            cwd=Path(__file__).resolve().parents[1],
        )
        if done.returncode != 0:
            raise RuntimeError(f"the {client} worker failed:\n{done.stderr}")
        measured = json.loads(done.stdout)
        latencies_ms = np.asarray(measured["latencies_s"]) * 1e3
        figures.append(
            ClientFigures(
                client=client,
                calls=len(latencies_ms),
                p50_ms=float(np.percentile(latencies_ms, 50)),
                p99_ms=float(np.percentile(latencies_ms, 99)),
                calls_per_s=len(latencies_ms) / measured["wall_s"],
            )
        )
    return figures


def markdown_table(figures: Sequence[ClientFigures]) -> str:
    lines = [
        "| client | calls | p50 ms | p99 ms | calls/s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {f.client} | {f.calls} | {f.p50_ms:.3f} | {f.p99_ms:.3f} | {f.calls_per_s:.0f} |"
        for f in figures
    ]
    return "\n".join(lines)


# ---- the workers: one client each, in a process of its own ------------------------------


def _timed(call: Callable[[], object], calls: int) -> tuple[list[float], float]:
    for _ in range(WARMUP_CALLS):
        call()
    latencies_s = []
    started = time.perf_counter()
    for _ in range(calls):
        before = time.perf_counter()
        call()
        latencies_s.append(time.perf_counter() - before)
    return latencies_s, time.perf_counter() - started


def _infergate(url: str, model: str, x: np.ndarray, calls: int) -> tuple[list[float], float]:
    from infergate.clients import Client

    with Client(url) as client:
        return _timed(lambda: client.infer(model, {"x": x}), calls)


def _infergate_asyncio(
    url: str, model: str, x: np.ndarray, calls: int
) -> tuple[list[float], float]:
    from infergate.clients import AsyncClient

    async def run() -> tuple[list[float], float]:
        async with AsyncClient(url) as client:
            for _ in range(WARMUP_CALLS):
                await client.infer(model, {"x": x})
            latencies_s = []
            started = time.perf_counter()
            for _ in range(calls):
                before = time.perf_counter()
                await client.infer(model, {"x": x})
                latencies_s.append(time.perf_counter() - before)
            return latencies_s, time.perf_counter() - started

    return asyncio.run(run())


def _generated_stub(url: str, model: str, x: np.ndarray, calls: int) -> tuple[list[float], float]:
    """What a caller writes by hand on the stub: numpy to raw bytes and back."""
    import grpc

    from infergate.protocol import inference_pb2 as pb
    from infergate.protocol import inference_pb2_grpc as pb_grpc

    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def call() -> np.ndarray:
            request = pb.ModelInferRequest(model_name=model)
            request.inputs.add(name="x", datatype="FP32", shape=x.shape)
            request.raw_input_contents.append(x.tobytes())
            response = stub.ModelInfer(request, timeout=30)
            shape = tuple(response.outputs[0].shape)
            return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(shape)

        return _timed(call, calls)


def _tritonclient(url: str, model: str, x: np.ndarray, calls: int) -> tuple[list[float], float]:
    import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]

    client = grpcclient.InferenceServerClient(url)

    def call() -> np.ndarray:
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(model, [tensor]).as_numpy("y")  # type: ignore[no-any-return]

    try:
        return _timed(call, calls)
    finally:
        client.close()


_WORKERS = {
    "infergate": _infergate,
    "infergate-asyncio": _infergate_asyncio,
    "generated-stub": _generated_stub,
    "tritonclient": _tritonclient,
}


def _work(client: str, url: str, model: str, calls: int) -> None:
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    latencies_s, wall_s = _WORKERS[client](url, model, x, calls)
    print(json.dumps({"latencies_s": latencies_s, "wall_s": wall_s}))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running gateway (default: start one on --repository)")
    parser.add_argument("--repository", type=Path, default=Path("models/repository"))
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _work(args.worker, args.url, args.model, args.calls)
        return 0
    if args.url:
        figures = compare_clients(args.url, args.calls, args.clients, args.model)
    else:
        with (
            tempfile.TemporaryDirectory() as folder,
            gateway(args.repository, Path(folder) / "gateway.log") as gw,
        ):
            figures = compare_clients(gw.url, args.calls, args.clients, args.model)
    print(markdown_table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
