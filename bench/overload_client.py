"""Many clients at once against one model, each sending as fast as it is answered.

Run in a process of its own (`python -m bench.overload_client ...`), so the load it
makes does not share an interpreter with whatever measures it. Prints one JSON
object: the latency of every answer, by status code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import numpy as np

from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc


def _request(model: str, shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    request.raw_input_contents.append(np.random.rand(*shape).astype(np.float32).tobytes())
    return request


async def _run(url: str, model: str, shape: list[int], clients: int, seconds: float) -> dict:
    latencies: dict[str, list[float]] = {}
    request = _request(model, shape)
    stop_at = time.monotonic() + seconds
    # One channel per client, as separate client processes would have.
    channels = [grpc.aio.insecure_channel(url) for _ in range(clients)]

    async def client(channel: grpc.aio.Channel) -> None:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                await stub.ModelInfer(request, timeout=30)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            latencies.setdefault(code, []).append(time.perf_counter() - started)

    try:
        await asyncio.gather(*(client(c) for c in channels))
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    return {"seconds": seconds, "clients": clients, "latencies_s": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--shape", default="1,3,32,32", help="input x's shape, comma-separated")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    shape = [int(d) for d in args.shape.split(",")]
    print(json.dumps(asyncio.run(_run(args.url, args.model, shape, args.clients, args.seconds))))


if __name__ == "__main__":
    main()
