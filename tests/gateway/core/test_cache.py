"""The response cache: keys, the in-process byte-bounded LRU store (TTL, invalidation by
namespace), and single flight over a store."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from infergate.gateway.core.cache import CacheKey, ResponseCache, cache_key
from infergate.gateway.core.lru_store import LRUStore
from infergate.gateway.core.request import InputTensor, OutputTensor


def tensor(data: np.ndarray, name: str = "x", datatype: str = "FP32") -> InputTensor:
    return InputTensor(name, datatype, tuple(data.shape), data)


X = np.arange(8, dtype=np.float32).reshape(2, 4)
BASE = cache_key("m", "1", [tensor(X)], ["y"])


def k(name: str, model: str = "m", version: str = "1") -> CacheKey:
    """A key in a model's namespace, its digest standing in for a request's."""
    return CacheKey(model, version, name.encode())


def out(nbytes: int, value: float = 0.0) -> list[OutputTensor]:
    return [OutputTensor("y", "UINT8", np.full(nbytes, value, dtype=np.uint8))]


def test_the_key_is_stable_and_covers_everything_that_decides_the_answer() -> None:
    assert cache_key("m", "1", [tensor(X.copy())], ["y"]) == BASE
    same_bytes_other_shape = X.reshape(4, 2)
    same_bytes_other_dtype = X.view(np.int32)
    variants = {
        "model": cache_key("n", "1", [tensor(X)], ["y"]),
        "version": cache_key("m", "2", [tensor(X)], ["y"]),
        "shape": cache_key("m", "1", [tensor(same_bytes_other_shape)], ["y"]),
        "datatype": cache_key("m", "1", [tensor(same_bytes_other_dtype, datatype="INT32")], ["y"]),
        "name": cache_key("m", "1", [tensor(X, name="z")], ["y"]),
        "data": cache_key("m", "1", [tensor(X + 1)], ["y"]),
        "outputs": cache_key("m", "1", [tensor(X)], ["y", "z"]),
    }
    assert BASE not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_input_order_does_not_matter_but_names_do() -> None:
    a, b = tensor(X, "a"), tensor(X + 1, "b")
    assert cache_key("m", "1", [a, b], ["y"]) == cache_key("m", "1", [b, a], ["y"])


def test_bytes_tensors_are_keyed_by_their_elements() -> None:
    def key(*elements: bytes) -> CacheKey:
        data = np.array(elements, dtype=object)
        return cache_key("m", "1", [tensor(data, datatype="BYTES")], ["y"])

    assert key(b"ab", b"c") != key(b"a", b"bc")
    assert key(b"ab", b"c") == key(b"ab", b"c")


def test_the_key_carries_its_namespace() -> None:
    assert (BASE.model, BASE.version, len(BASE.digest)) == ("m", "1", 32)
    assert BASE.in_namespace("m", None) and BASE.in_namespace("m", "1")
    assert not BASE.in_namespace("m", "2") and not BASE.in_namespace("n", None)


async def test_least_recently_used_goes_first_by_bytes() -> None:
    store = LRUStore(max_bytes=3 * (256 + 1000))  # three entries of ~1.25 kB
    for name in ("a", "b", "c"):
        assert await store.put(k(name), out(1000))
    assert await store.get(k("a")) is not None  # a is now the most recently used
    await store.put(k("d"), out(1000))
    assert await store.get(k("b")) is None  # b was least recently used
    assert all([await store.get(k(name)) is not None for name in ("a", "c", "d")])
    stats = store.stats()
    assert stats.evictions == 1
    assert stats.used_bytes <= stats.max_bytes


async def test_one_big_entry_evicts_as_many_small_ones_as_it_needs() -> None:
    store = LRUStore(max_bytes=10_000)
    for i in range(5):
        await store.put(k(str(i)), out(1000))
    await store.put(k("big"), out(6000))
    assert store.stats().used_bytes <= 10_000 and await store.get(k("big")) is not None
    assert store.stats().evictions >= 3


async def test_an_entry_larger_than_the_cache_is_not_cached() -> None:
    store = LRUStore(max_bytes=1000)
    await store.put(k("small"), out(100))
    assert not await store.put(k("huge"), out(5000))
    assert await store.get(k("huge")) is None and await store.get(k("small")) is not None


async def test_entries_expire_after_their_ttl() -> None:
    now = [100.0]
    store = LRUStore(max_bytes=10_000, clock=lambda: now[0])
    await store.put(k("k"), out(10), ttl_s=5)
    await store.put(k("forever"), out(10))
    now[0] = 104.9
    assert await store.get(k("k")) is not None
    now[0] = 105.0
    assert await store.get(k("k")) is None and store.stats().expirations == 1
    assert await store.get(k("forever")) is not None


async def test_stored_outputs_do_not_keep_the_batch_alive() -> None:
    batch = np.zeros((32, 1000), np.float32)
    store = LRUStore(max_bytes=1 << 20)
    await store.put(k("k"), [OutputTensor("y", "FP32", batch[3:4])])
    stored = await store.get(k("k"))
    assert stored is not None and stored[0].data.base is None
    assert store.stats().used_bytes < 8000


async def test_invalidating_a_model_keeps_the_other_models_answers() -> None:
    store = LRUStore(max_bytes=1 << 20)
    for key in (k("a", "x", "1"), k("b", "x", "1"), k("a", "x", "2"), k("a", "y", "1")):
        await store.put(key, out(10))
    assert await store.invalidate("x", "1") == 2  # one version of x
    assert await store.get(k("a", "x", "1")) is None and await store.get(k("b", "x", "1")) is None
    assert await store.get(k("a", "x", "2")) is not None
    assert await store.invalidate("x") == 1  # every version of x
    assert await store.get(k("a", "x", "2")) is None
    assert await store.get(k("a", "y", "1")) is not None  # y's answers survive both
    stats = store.stats()
    assert stats.entries == 1 and stats.evictions == 0  # an invalidation is not an eviction
    assert await store.invalidate("x") == 0


async def test_invalidation_counts_only_what_is_still_stored() -> None:
    now = [0.0]
    store = LRUStore(max_bytes=2 * (256 + 1000), clock=lambda: now[0])
    await store.put(k("a", "x"), out(1000))
    await store.put(k("b", "x"), out(1000), ttl_s=1)
    await store.put(k("c", "y"), out(1000))  # evicts x's a
    now[0] = 2.0
    assert await store.get(k("b", "x")) is None  # expired
    assert await store.invalidate("x") == 0
    assert await store.invalidate("y") == 1 and store.stats().entries == 0


async def test_identical_requests_in_flight_are_computed_once() -> None:
    cache = ResponseCache(LRUStore(max_bytes=1 << 20))
    calls = 0
    gate = asyncio.Event()

    async def compute() -> list[OutputTensor]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return out(4, value=7)

    tasks = [asyncio.create_task(cache.get_or_compute(k("k"), compute)) for _ in range(10)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert sum(1 for _, hit in results if not hit) == 1
    assert all(int(o[0].data[0]) == 7 for o, _ in results)
    stats = cache.stats()
    assert stats.shared == 9 and stats.misses == 1 and stats.hits == 9
    _, hit = await cache.get_or_compute(k("k"), compute)
    assert hit and calls == 1 and cache.stats().hits == 10


async def test_an_error_reaches_every_waiter_and_is_not_cached() -> None:
    cache = ResponseCache(LRUStore(max_bytes=1 << 20))
    gate = asyncio.Event()

    async def compute() -> list[OutputTensor]:
        await gate.wait()
        raise RuntimeError("boom")

    tasks = [asyncio.create_task(cache.get_or_compute(k("k"), compute)) for _ in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await cache.store.get(k("k")) is None


async def test_when_the_computing_caller_leaves_a_waiter_computes_instead() -> None:
    cache = ResponseCache(LRUStore(max_bytes=1 << 20))
    gate = asyncio.Event()
    calls = 0

    async def compute() -> list[OutputTensor]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return out(4, value=calls)

    leader = asyncio.create_task(cache.get_or_compute(k("k"), compute))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(cache.get_or_compute(k("k"), compute))
    await asyncio.sleep(0.01)
    leader.cancel()
    await asyncio.sleep(0.01)
    gate.set()
    outputs, hit = await follower
    assert not hit and calls == 2 and int(outputs[0].data[0]) == 2
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_an_answer_computed_while_its_model_is_invalidated_is_not_stored() -> None:
    cache = ResponseCache(LRUStore(max_bytes=1 << 20))
    gate = asyncio.Event()
    calls = 0

    async def compute() -> list[OutputTensor]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return out(4, value=calls)

    stale = asyncio.create_task(cache.get_or_compute(k("k", "x"), compute))
    other = asyncio.create_task(cache.get_or_compute(k("k", "y"), compute))
    await asyncio.sleep(0.01)
    await cache.invalidate("x")
    fresh = asyncio.create_task(cache.get_or_compute(k("k", "x"), compute))  # does not wait
    await asyncio.sleep(0.01)
    gate.set()
    (_, stale_hit), (_, fresh_hit), _ = await asyncio.gather(stale, fresh, other)
    assert calls == 3 and not stale_hit and not fresh_hit
    stored = await cache.store.get(k("k", "x"))
    assert stored is not None and int(stored[0].data[0]) == 3  # the fresh answer, not stale
    assert await cache.store.get(k("k", "y")) is not None  # y was not invalidated
