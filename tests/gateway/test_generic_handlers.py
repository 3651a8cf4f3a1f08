"""The gateway's services are generic handlers only (infergate/gateway/generic_handlers.py):
grpc.aio's server then waits for the next call on one task, not one per method."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

import grpc
import numpy as np
import pytest

from infergate.gateway.server import GatewayServer
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc


async def test_each_call_waits_on_one_request_task_whatever_the_number_of_methods(
    gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    waited: list[int] = []
    wait = asyncio.wait

    def counting_wait(tasks: Iterable[Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        tasks = list(tasks)
        names = {getattr(t, "get_coro", lambda: None)().__qualname__ for t in tasks}  # type: ignore[union-attr]
        if any("request" in n and "call" in n for n in names):  # grpc.aio's _request_*call
            waited.append(len(tasks))
        return wait(tasks, *args, **kwargs)

    monkeypatch.setattr(asyncio, "wait", counting_wait)
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(5):
            request = pb.ModelInferRequest(model_name="digits")
            request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
            request.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
            await stub.ModelInfer(request)
            await stub.ServerLive(pb.ServerLiveRequest())
    # With registered methods (what generated add_*_to_server code does) this was 30:
    # one task per method of the inference, admin, health and reflection services.
    assert waited and max(waited) == 1, waited
