"""Two gateways sharing one Redis: an answer one computed is a cache hit on the other,
through the real server and the real protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.clients import build_request
from infergate.gateway.core.redis_store import TwoLevelStore
from infergate.gateway.server import GatewayServer
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.settings import Settings, SettingsError
from tests.scaleout.conftest import RedisProcess


@pytest.fixture
async def two_gateways(
    repository: Path, redis_server: RedisProcess
) -> AsyncIterator[tuple[GatewayServer, GatewayServer]]:
    settings = Settings(
        metrics_port=0,
        model_repository=repository,
        port=0,
        shutdown_grace_s=1.0,
        cache_redis_url=redis_server.url,
        # Generous for a busy test machine; the bounds are tested on the store itself.
        cache_redis_timeout_ms=500,
        cache_redis_connect_timeout_ms=500,
    )
    first, second = GatewayServer(settings), GatewayServer(settings)
    await first.start()
    try:
        await second.start()
        try:
            yield first, second
        finally:
            await second.stop()
    finally:
        await first.stop()


async def infer_and_stats(
    server: GatewayServer, x: np.ndarray
) -> tuple[pb.ModelInferResponse, pb.ModelStatistics]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = await stub.ModelInfer(build_request("digits", {"x": x}))
        stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="digits"))
    return response, stats.model_stats[0]


async def test_a_request_one_gateway_answered_is_a_cache_hit_on_the_other(
    two_gateways: tuple[GatewayServer, GatewayServer], redis_server: RedisProcess
) -> None:
    first, second = two_gateways
    assert isinstance(first.core.cache.store, TwoLevelStore)
    x = np.random.default_rng(18).random((1, 64), dtype=np.float32)
    computed, first_stats = await infer_and_stats(first, x)
    assert first_stats.inference_stats.cache_miss.count == 1
    assert first_stats.inference_count == 1
    shared, second_stats = await infer_and_stats(second, x)
    assert shared.raw_output_contents == computed.raw_output_contents
    assert second_stats.inference_stats.cache_hit.count == 1
    assert second_stats.inference_stats.cache_miss.count == 0
    assert second_stats.inference_count == 0  # nothing computed on the second
    assert isinstance(second.core.cache.store, TwoLevelStore)
    assert second.core.cache.store.tier_stats().redis_hits == 1
    client = redis_server.client()
    entries = list(client.scan_iter("infergate:digits:1:*"))
    assert len(entries) == 1 and client.ttl(entries[0]) > 0


async def test_without_a_redis_url_the_cache_is_in_process_only(repository: Path) -> None:
    server = GatewayServer(Settings(metrics_port=0, model_repository=repository, port=0))
    assert server.redis is None
    assert not isinstance(server.core.cache.store, TwoLevelStore)


def test_a_bad_redis_setting_is_refused_at_start(repository: Path) -> None:
    with pytest.raises(SettingsError, match="cache_redis_url"):
        GatewayServer(Settings(metrics_port=0, cache_redis_url="http://example:6379"))
    with pytest.raises(SettingsError, match="must be > 0"):
        GatewayServer(
            Settings(metrics_port=0, cache_redis_url="redis://127.0.0.1:1", cache_redis_ttl_s=0)
        )
