"""Batching and caching end to end through the gRPC server."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from infergate.backends.discovery import discover
from infergate.clients import AsyncClient, InferenceError, build_request
from infergate.gateway.server import GatewayServer
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.settings import Settings
from tests.conftest import DEMO_REPOSITORY
from tests.fake_backend import FakeBackend, write_fake_model

DIGITS_CONFIG = """
max_batch_size: 64
input [ { name: "x" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 10 ] } ]
dynamic_batching { max_queue_delay_microseconds: 20000 }
response_cache { enable: true }
"""


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[GatewayServer, FakeBackend]]:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPOSITORY / "digits" / "1", repo / "digits" / "1")
    (repo / "digits" / "config.pbtxt").write_text(DIGITS_CONFIG)
    write_fake_model(repo, "slow", delay_s=0.2)
    write_fake_model(repo, "small_queue", delay_s=0.2, queue_policy="max_queue_size: 1")
    write_fake_model(repo, "flaky", fail_on=13.0, queue_delay_us=20000)
    fake = FakeBackend()
    backends = {**discover(["onnxruntime"]).backends, "fake": fake}
    settings = Settings(
        metrics_port=0, model_repository=repo, port=0, max_inflight_batches=1, shutdown_grace_s=1
    )
    server = GatewayServer(settings, backends=backends)
    await server.start()
    try:
        yield server, fake
    finally:
        await server.stop()


def digits_reference(x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(DEMO_REPOSITORY / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return np.asarray(session.run(None, {"x": x})[0])


async def test_concurrent_requests_are_batched_and_answered_exactly(
    served: tuple[GatewayServer, FakeBackend],
) -> None:
    server, _ = served
    rng = np.random.default_rng(3)
    inputs = [rng.random((n, 64), dtype=np.float32) for n in (1, 2, 1, 3, 1, 1, 2, 1)]
    async with AsyncClient(server.address) as client:
        results = await asyncio.gather(*(client.infer("digits", {"x": x}) for x in inputs))
        for x, result in zip(inputs, results, strict=True):
            np.testing.assert_allclose(result["y"], digits_reference(x), rtol=1e-5, atol=1e-6)
    stats = server.core.model("digits").stats
    assert stats.inference_count == 12
    assert stats.execution_count < len(inputs)  # requests shared batches
    assert max(stats.batches) > 1


async def test_a_repeated_request_is_answered_from_the_cache_with_the_callers_id(
    served: tuple[GatewayServer, FakeBackend],
) -> None:
    server, _ = served
    x = np.full((1, 64), 0.5, np.float32)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        first = await stub.ModelInfer(build_request("digits", {"x": x}, request_id="one"))
        second = await stub.ModelInfer(build_request("digits", {"x": x}, request_id="two"))
        assert second.id == "two" and first.id == "one"
        assert second.raw_output_contents == first.raw_output_contents
        bypass = build_request("digits", {"x": x}, parameters={"cache_bypass": True})
        await stub.ModelInfer(bypass)
        other = await stub.ModelInfer(build_request("digits", {"x": x.astype(np.float32) + 1}))
        assert other.raw_output_contents != first.raw_output_contents
        stats = (await stub.ModelStatistics(pb.ModelStatisticsRequest(name="digits"))).model_stats[
            0
        ]
    assert stats.inference_stats.cache_hit.count == 1
    assert stats.inference_stats.cache_miss.count == 2
    assert stats.inference_stats.success.count == 4
    assert stats.inference_count == 3  # the hit computed nothing
    assert server.core.cache.stats().hits == 1


async def test_a_request_whose_deadline_passes_in_the_queue_is_never_run(
    served: tuple[GatewayServer, FakeBackend],
) -> None:
    server, fake = served
    async with AsyncClient(server.address) as client:
        first = asyncio.create_task(client.infer("slow", {"x": np.full((1, 4), 1, np.float32)}))
        await asyncio.sleep(0.05)  # first is running and holds the model's one slot
        client.timeout_s = 0.05
        with pytest.raises(InferenceError) as caught:
            await client.infer("slow", {"x": np.full((1, 4), 99, np.float32)})
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        await first
        await asyncio.sleep(0.3)
    assert 99.0 not in fake.loaded["slow"].values_seen()


async def test_a_cancelled_call_is_dropped_before_it_runs(
    served: tuple[GatewayServer, FakeBackend],
) -> None:
    server, fake = served
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        first = stub.ModelInfer(build_request("slow", {"x": np.full((1, 4), 1, np.float32)}))
        await asyncio.sleep(0.05)
        doomed = stub.ModelInfer(build_request("slow", {"x": np.full((1, 4), 42, np.float32)}))
        await asyncio.sleep(0.05)
        doomed.cancel()
        await first
        await asyncio.sleep(0.3)
    assert 42.0 not in fake.loaded["slow"].values_seen()
    assert server.core.model("slow").queue.depth == 0


async def test_a_full_queue_answers_resource_exhausted_at_once(
    served: tuple[GatewayServer, FakeBackend],
) -> None:
    server, _ = served
    async with AsyncClient(server.address) as client:
        x = np.ones((1, 4), np.float32)
        running = asyncio.create_task(client.infer("small_queue", {"x": x}))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(client.infer("small_queue", {"x": x + 1}))
        await asyncio.sleep(0.05)
        with pytest.raises(InferenceError) as caught:
            await client.infer("small_queue", {"x": x + 2})
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queue_size" in caught.value.message
        await asyncio.gather(running, queued)


async def test_a_failure_caused_by_a_requests_values_fails_only_that_request(
    served: tuple[GatewayServer, FakeBackend],
) -> None:
    server, _ = served
    async with AsyncClient(server.address) as client:
        results = await asyncio.gather(
            client.infer("flaky", {"x": np.full((1, 4), 13, np.float32)}),
            client.infer("flaky", {"x": np.full((1, 4), 1, np.float32)}),
            return_exceptions=True,
        )
        # One batch, which failed; its batch-mate was answered by a re-run without it.
        error, answered = results
        assert isinstance(error, InferenceError)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "failed on cue" in error.message
        assert not isinstance(answered, BaseException)
        np.testing.assert_array_equal(answered["y"], np.full((1, 4), 2, np.float32))
        ok = await client.infer("flaky", {"x": np.full((1, 4), 2, np.float32)})
        np.testing.assert_array_equal(ok["y"], np.full((1, 4), 4, np.float32))
