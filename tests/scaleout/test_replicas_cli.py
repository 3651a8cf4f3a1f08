"""Scale-out end to end with real processes on loopback: redis-server, two (or three)
`infergate serve` replicas on one repository folder, and HAProxy in front
(deploy/haproxy/haproxy.cfg, checking every 200 ms here).

- an answer computed on one replica is a cache hit on the other, directly and
  through the proxy;
- a model registered on one is served by the other within PROPAGATION_BOUND_S;
  unregistered on the other, the first stops serving it; a replica started later
  catches up;
- Redis stopped under load: every call is answered, correctly, within a bound;
  Redis back: hits resume;
- a replica killed (SIGKILL) under load: only calls in flight on it may fail, and
  the proxy routes around it; a replica stopped with SIGTERM loses none (it drains);
- two replicas registering one name at once: one wins, and after a restart both
  serve the winner's version.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import onnxruntime
import pytest

from infergate.clients import AdminError
from infergate.clients.admin_client import AsyncAdminClient
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from tests.cli_gateway import CliGateway, cli_gateway
from tests.scaleout.conftest import RedisProcess
from tests.scaleout.replicas import (
    DIGITS_ONNX,
    PROPAGATION_BOUND_S,
    eventually,
    infer,
    ready,
    register_digits,
    served_max_batch_size,
    shared_repository,
)
from tests.scaleout.test_haproxy import DOWN, UP, Haproxy, haproxy, needs_haproxy

pytestmark = needs_haproxy

CHECK_INTERVAL = "200ms"  # two failed checks: out within about half a second
DRAIN_S = 1.5  # longer than two check intervals plus a margin for a busy machine
# The cache's Redis bounds in these tests (connect + command): generous for a busy
# 2-core machine, and the bound on what a lookup may cost while Redis is away.
REDIS_TIMEOUT_MS = 200
# No call may take longer, Redis away or not (a lookup costs at most two bounds).
CALL_BOUND_S = 2.0


def replica_args(redis: RedisProcess, replica_id: str) -> list[str]:
    return [
        "--replica-id", replica_id,
        "--insecure-admin",
        "--backends", "onnxruntime",
        "--cache-redis-url", redis.url,
        "--cache-redis-timeout-ms", str(REDIS_TIMEOUT_MS),
        "--cache-redis-connect-timeout-ms", str(REDIS_TIMEOUT_MS),
        "--registry-redis-url", redis.url,
        "--registry-heartbeat-s", "0.2",
        "--drain-s", str(DRAIN_S),
    ]  # fmt: skip


@contextlib.contextmanager
def replica(root: Path, repo: Path, redis: RedisProcess, name: str) -> Iterator[CliGateway]:
    workdir = root / name
    workdir.mkdir(exist_ok=True)
    with cli_gateway(workdir, repo, replica_args(redis, name)) as gateway:
        yield gateway


@dataclass
class Cluster:
    repo: Path
    redis: RedisProcess
    a: CliGateway
    b: CliGateway
    proxy: Haproxy


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisProcess) -> Iterator[Cluster]:
    repo = shared_repository(tmp_path)
    with (
        replica(tmp_path, repo, redis_server, "replica-a") as a,
        replica(tmp_path, repo, redis_server, "replica-b") as b,
        haproxy(tmp_path / "proxy", (a.url, b.url), CHECK_INTERVAL) as proxy,
    ):
        await proxy.wait_for({"gateway-1": UP, "gateway-2": UP})
        yield Cluster(repo, redis_server, a, b, proxy)


async def statistics(address: str, model: str = "digits") -> pb.InferStatistics:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name=model))
    return stats.model_stats[0].inference_stats


async def counts(address: str) -> tuple[int, int]:
    """(cache hits, rows computed) of digits on one replica."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="digits"))
    model = stats.model_stats[0]
    return int(model.inference_stats.cache_hit.count), int(model.inference_count)


# ---- load through the proxy ------------------------------------------------------------


@dataclass
class Load:
    """Calls from `workers` concurrent callers over one client connection, each checked
    against onnxruntime's own answer."""

    address: str
    workers: int
    inputs: np.ndarray = field(
        default_factory=lambda: np.random.default_rng(7).random((64, 1, 64), dtype=np.float32)
    )
    started: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (when it started, why)
    wrong: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        session = onnxruntime.InferenceSession(str(DIGITS_ONNX))
        self.expected = [session.run(None, {"x": x})[0] for x in self.inputs]

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await asyncio.gather(*(self._worker(stub, i) for i in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()

    async def _worker(self, stub: pb_grpc.GRPCInferenceServiceStub, seed: int) -> None:
        from infergate.clients import build_request

        rng = np.random.default_rng(seed)
        while not self._stop.is_set():
            k = int(rng.integers(len(self.inputs)))
            started = time.monotonic()
            try:
                response = await stub.ModelInfer(
                    build_request("digits", {"x": self.inputs[k]}), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                self.failures.append((started, f"{exc.code().name}: {exc.details()}"))
                continue
            self.started.append(started)
            self.latencies.append(time.monotonic() - started)
            got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
            if not np.allclose(got, self.expected[k].ravel(), rtol=1e-5, atol=1e-6):
                self.wrong += 1


@contextlib.asynccontextmanager
async def load(address: str, workers: int) -> AsyncIterator[Load]:
    running = Load(address, workers)
    task = asyncio.create_task(running.run())
    try:
        yield running
    finally:
        running.stop()
        await task


# ---- the tests -------------------------------------------------------------------------


async def test_cli_replicas_share_answers_and_follow_each_others_changes(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.a, cluster.b
    # An answer computed on A is a hit on B (directly).
    x = np.random.default_rng(1).random((1, 64), dtype=np.float32)
    computed = await infer(a.url, "digits", x)
    hits_b, rows_b = await counts(b.url)
    shared = await infer(b.url, "digits", x)
    assert shared.raw_output_contents == computed.raw_output_contents
    assert await counts(b.url) == (hits_b + 1, rows_b)
    # Through the proxy: the same request twice, computed once whichever replica takes it.
    y = np.random.default_rng(2).random((1, 64), dtype=np.float32)
    before = [await counts(a.url), await counts(b.url)]
    for _ in range(2):
        await infer(cluster.proxy.address, "digits", y)
    after = [await counts(a.url), await counts(b.url)]
    assert sum(h for h, _ in after) - sum(h for h, _ in before) == 1
    assert sum(r for _, r in after) - sum(r for _, r in before) == 1

    # Registered on A: served by B within the bound.
    started = time.monotonic()
    await register_digits(a.url, "digits2")
    await eventually(lambda: ready(b.url, "digits2"), "B serves digits2")
    assert time.monotonic() - started < PROPAGATION_BOUND_S
    # Unregistered on B: A stops serving it.
    async with AsyncAdminClient(b.url) as admin:
        await admin.unregister("digits2")
    await eventually(lambda: _not(ready(a.url, "digits2")), "A stops serving digits2")
    # A replica started later catches up, then follows.
    await register_digits(b.url, "digits3", wait_replicas_s=PROPAGATION_BOUND_S)
    with replica(tmp_path, cluster.repo, cluster.redis, "replica-c") as c:
        assert await ready(c.url, "digits3")
        response = await register_digits(a.url, "digits3", wait_replicas_s=PROPAGATION_BOUND_S)
        assert [r.replica for r in response.replicas] == ["replica-a", "replica-b", "replica-c"]
        assert await ready(c.url, "digits3", "2")


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def test_redis_stopped_under_load_costs_hits_never_answers(cluster: Cluster) -> None:
    async with load(cluster.proxy.address, workers=4) as running:
        await asyncio.sleep(1.0)
        cluster.redis.stop()
        stopped_at = time.monotonic()
        await asyncio.sleep(1.5)
        cluster.redis.start()  # empty: tokens and entries are recreated
        await asyncio.sleep(1.0)
    during = [
        s for s in running.started if stopped_at <= s < stopped_at + 1.5
    ]  # calls made while Redis was away
    assert running.failures == []
    assert running.wrong == 0
    assert len(during) > 10, "the load went on while Redis was away"
    assert max(running.latencies) < CALL_BOUND_S
    # Hits across replicas resume: computed on A, a hit on B.
    x = np.random.default_rng(3).random((1, 64), dtype=np.float32)

    async def shared_again() -> bool:
        await infer(cluster.a.url, "digits", x)
        hits, rows = await counts(cluster.b.url)
        await infer(cluster.b.url, "digits", x)
        return await counts(cluster.b.url) == (hits + 1, rows)

    await eventually(shared_again, "a hit from another replica after Redis came back", 10)
    assert cluster.redis.client().dbsize() > 0


async def test_a_replica_killed_under_load_costs_only_its_calls_in_flight(
    cluster: Cluster,
) -> None:
    workers = 6
    async with load(cluster.proxy.address, workers) as running:
        await asyncio.sleep(1.0)
        cluster.b.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        cluster.b.process.wait()
        await cluster.proxy.wait_for({"gateway-2": DOWN})
        down_at = time.monotonic()
        await asyncio.sleep(1.0)
    # Only calls in flight on it when it died may fail (HAProxy re-sends what never
    # reached it), and none started once the proxy had taken it out.
    assert len(running.failures) <= workers, running.failures
    assert all(started < down_at for started, _ in running.failures), running.failures
    assert running.wrong == 0
    assert sum(1 for s in running.started if s > down_at) > 10
    assert down_at - killed_at < 5.0


async def test_a_replica_stopped_with_sigterm_drains_and_loses_no_call(
    cluster: Cluster,
) -> None:
    async with load(cluster.proxy.address, workers=6) as running:
        await asyncio.sleep(1.0)
        cluster.b.process.send_signal(signal.SIGTERM)
        termed = time.monotonic()
        await cluster.proxy.wait_for({"gateway-2": DOWN}, timeout_s=DRAIN_S + 5)
        out_after = time.monotonic() - termed
        code = await asyncio.to_thread(cluster.b.process.wait, 30)
        await asyncio.sleep(0.5)
    assert code == 0, cluster.b.log_text()
    assert "draining" in cluster.b.log_text()
    # The proxy saw NOT_SERVING and took it out while it still served (the drain).
    assert out_after < DRAIN_S
    assert running.failures == []
    assert running.wrong == 0
    assert len(running.latencies) > 20


async def test_two_cli_replicas_registering_one_name_at_once(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    repo = shared_repository(tmp_path)
    with (
        replica(tmp_path, repo, redis_server, "replica-a") as a,
        replica(tmp_path, repo, redis_server, "replica-b") as b,
    ):
        results = await asyncio.gather(
            register_digits(a.url, "contested", version="1", max_batch_size=8),
            register_digits(b.url, "contested", version="1", max_batch_size=16),
            return_exceptions=True,
        )
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(lost) == 1, results
        assert isinstance(lost[0], AdminError)
        assert lost[0].code is grpc.StatusCode.ALREADY_EXISTS
        winner = 16 if results[0] is lost[0] else 8
        for gateway in (a, b):
            await eventually(
                lambda g=gateway: _equals(served_max_batch_size(g.url, "contested"), winner),
                "both serve the winner's version",
            )
    assert f"max_batch_size: {winner}\n" in (repo / "contested" / "config.pbtxt").read_text()
    # Both restarted: both serve the winner's version from the repository.
    with (
        replica(tmp_path, repo, redis_server, "replica-a") as a,
        replica(tmp_path, repo, redis_server, "replica-b") as b,
    ):
        for gateway in (a, b):
            assert await served_max_batch_size(gateway.url, "contested") == winner


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected
