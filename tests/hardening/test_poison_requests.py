"""A request whose values make the runtime fail fails alone: never its batch-mates,
never the arm, never the model for everyone (issue 16, item 1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.clients import build_request
from infergate.gateway.server import GatewayServer
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.settings import Settings
from tests import onnx_models

CONFIG = """
max_batch_size: 16
allowed_backends: ["onnxruntime"]
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
"""
GOOD = np.full((1, 4), 0.5, np.float32)
POISON = np.full((1, 4), 1000.0, np.float32)  # reshape to [-1, 1000]: no batch divides


async def _gateway(tmp_path: Path, delay_us: int) -> GatewayServer:
    repo = tmp_path / "repository"
    onnx_models.poisonable_model(repo / "poisonable" / "1" / "model.onnx")
    (repo / "poisonable" / "config.pbtxt").write_text(CONFIG.format(delay_us=delay_us))
    server = GatewayServer(
        Settings(metrics_port=0, model_repository=repo, port=0, shutdown_grace_s=1.0)
    )
    await server.start()
    return server


@pytest.fixture
async def stub(
    tmp_path: Path,
) -> AsyncIterator[tuple[GatewayServer, pb_grpc.GRPCInferenceServiceStub]]:
    server = await _gateway(tmp_path, delay_us=2000)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield server, pb_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await server.stop()


def request(x: np.ndarray) -> pb.ModelInferRequest:
    return build_request("poisonable", {"x": x})


async def test_an_attacker_beside_good_clients_fails_only_its_own_requests(
    stub: tuple[GatewayServer, pb_grpc.GRPCInferenceServiceStub],
) -> None:
    server, client = stub
    good_ok = good_failed = 0
    attacker_codes: list[grpc.StatusCode] = []
    attacker_messages: list[str] = []
    stop_at = time.monotonic() + 3.0

    async def good_client() -> None:
        nonlocal good_ok, good_failed
        while time.monotonic() < stop_at:
            try:
                response = await client.ModelInfer(request(GOOD), timeout=10)
            except grpc.aio.AioRpcError:
                good_failed += 1
                continue
            y = np.frombuffer(response.raw_output_contents[0], np.float32)
            assert np.allclose(y, 0.5)
            good_ok += 1

    async def attacker() -> None:
        # Three bad requests at once, again and again: before, three consecutive
        # failures opened every arm's circuit for 5 s.
        while time.monotonic() < stop_at:
            results = await asyncio.gather(
                *(client.ModelInfer(request(POISON), timeout=10) for _ in range(3)),
                return_exceptions=True,
            )
            for result in results:
                assert isinstance(result, grpc.aio.AioRpcError), "a poisoned request succeeded"
                attacker_codes.append(result.code())
                attacker_messages.append(result.details() or "")
            await asyncio.sleep(0.1)

    await asyncio.gather(*(good_client() for _ in range(12)), attacker())
    assert good_failed == 0 and good_ok > 100
    assert attacker_codes and set(attacker_codes) == {grpc.StatusCode.INVALID_ARGUMENT}
    assert all("rejected the request's input values" in m for m in attacker_messages)
    model = server.core.model("poisonable")
    (arm,) = model.router.arms
    assert arm.failures == 0 and arm.circuit.value == "closed"
    assert model.router.input_faults >= len(attacker_codes)


async def test_one_poisoned_request_in_a_batch_of_fifteen_fails_alone(tmp_path: Path) -> None:
    # A long queue delay, so the fifteen requests sent at once form one batch.
    server = await _gateway(tmp_path, delay_us=200_000)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            client = pb_grpc.GRPCInferenceServiceStub(channel)
            inputs = [GOOD + i / 100 for i in range(15)]
            inputs[6] = POISON
            results = await asyncio.gather(
                *(client.ModelInfer(request(x), timeout=10) for x in inputs),
                return_exceptions=True,
            )
        failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
        assert failed == [6]
        error = results[6]
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        for x, result in zip(inputs, results, strict=True):
            if isinstance(result, pb.ModelInferResponse):
                y = np.frombuffer(result.raw_output_contents[0], np.float32).reshape(1, 4)
                np.testing.assert_array_equal(y, x)  # each got its own rows back
        # One batch of 15 failed; its halves ran apart, recursively, around the
        # poisoned request: 14 rows answered in log2(15) successful calls, not 14.
        stats = server.core.model("poisonable").stats
        assert stats.inference_count == 14 and stats.execution_count <= 5
    finally:
        await server.stop()
