"""The two-level cache store against a real redis-server: shared across "replicas"
(store instances with links of their own), invalidated across them, a TTL on every
key, foreign values taken for misses, and Redis going away (stopped, or hung)
costing each call no more than its time bound, with the circuit open, logged once,
and closed again once Redis is back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from infergate.gateway.core.cache import CacheKey
from infergate.gateway.core.lru_store import LRUStore
from infergate.gateway.core.redis_link import RedisLink, RedisOptions
from infergate.gateway.core.redis_store import TwoLevelStore
from infergate.gateway.core.request import OutputTensor
from tests.scaleout.conftest import RedisProcess

MB = 1024 * 1024
LAG_S = 0.1
MakeStore = Callable[..., TwoLevelStore]


def key(n: int, model: str = "m", version: str = "1") -> CacheKey:
    return CacheKey(model, version, n.to_bytes(32, "little"))


def answer(n: int) -> list[OutputTensor]:
    return [
        OutputTensor("y", "FP32", np.full((2, 3), n, dtype=np.float32)),
        OutputTensor("label", "BYTES", np.array([f"class-{n}".encode()], dtype=object)),
    ]


def assert_is_answer(found: Any, n: int) -> None:
    assert found is not None, f"answer {n} not found"
    y, label = found
    np.testing.assert_array_equal(y.data, np.full((2, 3), n, dtype=np.float32))
    assert label.data.tolist() == [f"class-{n}".encode()]


@pytest.fixture
async def make_store(redis_server: RedisProcess) -> AsyncIterator[MakeStore]:
    links: list[RedisLink] = []

    def make(
        timeout_s: float = 0.5,
        connect_timeout_s: float = 0.5,
        retry_after_s: float = 0.2,
        default_ttl_s: float = 60.0,
    ) -> TwoLevelStore:
        options = RedisOptions(
            redis_server.url,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            retry_after_s=retry_after_s,
        )
        link = RedisLink(options)
        links.append(link)
        return TwoLevelStore(
            LRUStore(16 * MB), link, default_ttl_s=default_ttl_s, invalidation_lag_s=LAG_S
        )

    yield make
    for link in links:
        await link.aclose()


async def test_an_answer_one_replica_stored_is_a_hit_for_another(make_store: MakeStore) -> None:
    a, b = make_store(), make_store()
    assert await b.get(key(1)) is None
    assert await a.put(key(1), answer(1), 0.0)
    assert_is_answer(await b.get(key(1)), 1)  # from Redis
    assert_is_answer(await b.get(key(1)), 1)  # from b's own LRU
    tiers = b.tier_stats()
    assert (tiers.redis_hits, tiers.local_hits, tiers.misses) == (1, 1, 1)
    stats = b.stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 1, 1)
    assert await b.get(key(1, version="2")) is None  # versions are namespaces
    assert await b.get(key(1, model="other")) is None


async def test_every_key_in_redis_has_a_ttl(
    make_store: MakeStore, redis_server: RedisProcess
) -> None:
    store = make_store(default_ttl_s=60)
    await store.put(key(1), answer(1), 0.0)  # the model sets no TTL: the default
    await store.put(key(2, model="short"), answer(2), 5.0)  # response_cache_ttl_ms 5000
    await store.invalidate("m")
    await store.put(key(3), answer(3), 0.0)
    client = redis_server.client()
    keys = list(client.scan_iter("*"))
    assert len(keys) == 5  # three entries, two generation records
    ttls = {k: client.ttl(k) for k in keys}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    assert [ttl for k, ttl in ttls.items() if b":short:" in k] == [5]
    assert sorted(ttl for k, ttl in ttls.items() if k.startswith(b"infergate:m:")) == [60, 60]


async def test_an_answer_found_in_redis_is_kept_locally_no_longer_than_in_redis(
    make_store: MakeStore,
) -> None:
    a, b = make_store(), make_store()
    await a.put(key(1), answer(1), 0.3)
    assert_is_answer(await b.get(key(1)), 1)
    await asyncio.sleep(0.4)
    assert await b.get(key(1)) is None
    assert b.stats().expirations == 1  # b's local copy expired, not just Redis's


async def test_invalidating_one_model_is_seen_by_the_other_replica(make_store: MakeStore) -> None:
    a, b = make_store(), make_store()
    for k in (key(1), key(2, model="kept"), key(3, version="2")):
        await a.put(k, answer(k.digest[0]), 0.0)
        assert await b.get(k) is not None  # b holds a local copy of each
    assert await a.invalidate("m", "1") == 1  # a's local copy; Redis's are not counted
    assert await a.get(key(1)) is None  # at once on the replica that invalidated
    await asyncio.sleep(LAG_S * 1.5)
    assert await b.get(key(1)) is None  # within the lag on the other
    assert_is_answer(await b.get(key(2, model="kept")), 2)  # other models keep theirs
    assert_is_answer(await b.get(key(3, version="2")), 3)  # and other versions
    assert b.stats().entries == 2  # b dropped its stale copy when it saw the change

    await b.invalidate("m")  # every version
    await asyncio.sleep(LAG_S * 1.5)
    assert await a.get(key(3, version="2")) is None
    # What is stored after an invalidation is shared again.
    await a.put(key(1), answer(10), 0.0)
    assert_is_answer(await b.get(key(1)), 10)


async def test_an_answer_computed_from_before_an_invalidation_is_never_served_after_it(
    make_store: MakeStore,
) -> None:
    a, b = make_store(), make_store()
    await a.get(key(1))  # a learns the generation, then computes slowly...
    await b.invalidate("m")  # ...while b's model changes
    await a.put(key(1), answer(1), 0.0)  # a stores its stale answer under the old generation
    await asyncio.sleep(LAG_S * 1.5)
    assert await b.get(key(1)) is None
    assert await make_store().get(key(1)) is None


@pytest.mark.parametrize(
    "plant",
    [
        lambda c, k: c.set(k, b"garbage"),
        lambda c, k: c.set(k, b"IG\x01" + bytes(32) + b"\x00\x00"),  # an entry for another key
        lambda c, k: (c.delete(k), c.rpush(k, b"a list")),  # WRONGTYPE
    ],
    ids=["garbage", "other-key", "wrong-type"],
)
async def test_a_foreign_value_under_our_key_is_a_miss(
    make_store: MakeStore, redis_server: RedisProcess, plant: Callable[[Any, bytes], object]
) -> None:
    await make_store().put(key(1), answer(1), 0.0)
    client = redis_server.client()
    (entry,) = [k for k in client.scan_iter("infergate:m:*")]
    plant(client, entry)
    reader = make_store()
    assert await reader.get(key(1)) is None
    assert reader.tier_stats().misses == 1
    assert reader.tier_stats().redis.state == "closed"  # a bad value is not a bad Redis
    await reader.put(key(1), answer(1), 0.0)  # computed again and stored over it
    assert_is_answer(await make_store().get(key(1)), 1)


async def timed(call: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await call
    return result, time.perf_counter() - started


@pytest.mark.parametrize("outage", ["stopped", "hung"])
async def test_redis_going_away_costs_each_call_its_bound_then_nothing_and_comes_back(
    make_store: MakeStore,
    redis_server: RedisProcess,
    outage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="infergate.gateway.core.redis_link")
    store = make_store(timeout_s=0.05, connect_timeout_s=0.05, retry_after_s=0.5)
    bound_s = store.link.options.bound_s
    await store.put(key(0), answer(0), 0.0)
    await asyncio.sleep(LAG_S * 1.5)  # the generation is now due to be read again

    if outage == "stopped":
        redis_server.stop()
    else:
        redis_server.pause()
    durations = []
    for n in range(1, 41):
        found, took = await timed(store.get(key(n)))
        assert found is None
        durations.append(took)
        _, took = await timed(store.put(key(n), answer(n), 0.0))
        durations.append(took)
    # A lookup makes at most two calls (generation, entry), a store one.
    assert max(durations) <= 2 * bound_s + 0.1, durations
    # Once the circuit is open, calls are not even tried.
    assert sorted(durations)[len(durations) // 2] < 0.005, sorted(durations)
    stats = store.tier_stats()
    assert stats.redis.state == "open" and stats.redis.opened == 1
    assert stats.redis.failures == 3 and stats.redis.skipped > 50
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "going on without it" in warnings[0].getMessage()
    # What this replica had locally still answers (the generation it last knew).
    assert_is_answer(await store.get(key(0)), 0)

    if outage == "stopped":
        redis_server.start()  # empty: no persistence
    else:
        redis_server.resume()
    deadline = time.monotonic() + 5
    while store.link.stats().state != "closed":
        assert time.monotonic() < deadline, "the circuit did not close"
        await store.get(key(99))
        await asyncio.sleep(0.05)
    assert any("answers again" in r.getMessage() for r in caplog.records)
    await store.put(key(100), answer(100), 0.0)
    assert_is_answer(await make_store().get(key(100)), 100)  # shared again


async def test_an_invalidation_redis_missed_is_sent_when_it_is_back(
    make_store: MakeStore, redis_server: RedisProcess
) -> None:
    a = make_store(timeout_s=0.05, connect_timeout_s=0.05, retry_after_s=0.2)
    b = make_store()
    await a.put(key(1), answer(1), 0.0)
    assert await b.get(key(1)) is not None
    redis_server.pause()
    await a.invalidate("m")  # Redis does not answer: kept to send later
    redis_server.resume()
    await asyncio.sleep(0.25)  # past the circuit's cool-down
    await a.get(key(2))  # a's next call sends it
    await asyncio.sleep(LAG_S * 1.5)
    assert await b.get(key(1)) is None


async def test_stats_can_be_read_from_another_thread(make_store: MakeStore) -> None:
    store = make_store()
    await store.put(key(1), answer(1), 0.0)
    stats = await asyncio.to_thread(store.stats)
    assert stats.entries == 1
