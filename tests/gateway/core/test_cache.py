"""The response cache: keys, byte-bounded LRU, TTL and single flight."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from infergate.gateway.core.cache import ResponseCache, cache_key
from infergate.gateway.core.request import InputTensor, OutputTensor


def tensor(data: np.ndarray, name: str = "x", datatype: str = "FP32") -> InputTensor:
    return InputTensor(name, datatype, tuple(data.shape), data)


X = np.arange(8, dtype=np.float32).reshape(2, 4)
BASE = cache_key("m", "1", [tensor(X)], ["y"])


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
    def key(*elements: bytes) -> bytes:
        data = np.array(elements, dtype=object)
        return cache_key("m", "1", [tensor(data, datatype="BYTES")], ["y"])

    assert key(b"ab", b"c") != key(b"a", b"bc")
    assert key(b"ab", b"c") == key(b"ab", b"c")


def test_least_recently_used_goes_first_by_bytes() -> None:
    cache = ResponseCache(max_bytes=3 * (256 + 1000))  # three entries of ~1.25 kB
    for name in (b"a", b"b", b"c"):
        assert cache.put(name, out(1000))
    assert cache.get(b"a") is not None  # a is now the most recently used
    cache.put(b"d", out(1000))
    assert cache.get(b"b") is None  # b was least recently used
    assert all(cache.get(k) is not None for k in (b"a", b"c", b"d"))
    assert cache.counters.evictions == 1
    assert cache.current_bytes <= cache.max_bytes


def test_one_big_entry_evicts_as_many_small_ones_as_it_needs() -> None:
    cache = ResponseCache(max_bytes=10_000)
    for i in range(5):
        cache.put(bytes([i]), out(1000))
    cache.put(b"big", out(6000))
    assert cache.current_bytes <= 10_000 and cache.get(b"big") is not None
    assert cache.counters.evictions >= 3


def test_an_entry_larger_than_the_cache_is_not_cached() -> None:
    cache = ResponseCache(max_bytes=1000)
    cache.put(b"small", out(100))
    assert not cache.put(b"huge", out(5000))
    assert cache.get(b"huge") is None and cache.get(b"small") is not None


def test_entries_expire_after_their_ttl() -> None:
    now = [100.0]
    cache = ResponseCache(max_bytes=10_000, clock=lambda: now[0])
    cache.put(b"k", out(10), ttl_s=5)
    cache.put(b"forever", out(10))
    now[0] = 104.9
    assert cache.get(b"k") is not None
    now[0] = 105.0
    assert cache.get(b"k") is None and cache.counters.expirations == 1
    assert cache.get(b"forever") is not None


def test_stored_outputs_do_not_keep_the_batch_alive() -> None:
    batch = np.zeros((32, 1000), np.float32)
    cache = ResponseCache(max_bytes=1 << 20)
    cache.put(b"k", [OutputTensor("y", "FP32", batch[3:4])])
    stored = cache.get(b"k")
    assert stored is not None and stored[0].data.base is None
    assert cache.current_bytes < 8000


async def test_identical_requests_in_flight_are_computed_once() -> None:
    cache = ResponseCache(max_bytes=1 << 20)
    calls = 0
    gate = asyncio.Event()

    async def compute() -> list[OutputTensor]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return out(4, value=7)

    tasks = [asyncio.create_task(cache.get_or_compute(b"k", compute)) for _ in range(10)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert sum(1 for _, hit in results if not hit) == 1
    assert all(int(o[0].data[0]) == 7 for o, _ in results)
    assert cache.counters.shared == 9 and cache.counters.misses == 1
    _, hit = await cache.get_or_compute(b"k", compute)
    assert hit and calls == 1


async def test_an_error_reaches_every_waiter_and_is_not_cached() -> None:
    cache = ResponseCache(max_bytes=1 << 20)
    gate = asyncio.Event()

    async def compute() -> list[OutputTensor]:
        await gate.wait()
        raise RuntimeError("boom")

    tasks = [asyncio.create_task(cache.get_or_compute(b"k", compute)) for _ in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert cache.get(b"k") is None


async def test_when_the_computing_caller_leaves_a_waiter_computes_instead() -> None:
    cache = ResponseCache(max_bytes=1 << 20)
    gate = asyncio.Event()
    calls = 0

    async def compute() -> list[OutputTensor]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return out(4, value=calls)

    leader = asyncio.create_task(cache.get_or_compute(b"k", compute))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(cache.get_or_compute(b"k", compute))
    await asyncio.sleep(0.01)
    leader.cancel()
    await asyncio.sleep(0.01)
    gate.set()
    outputs, hit = await follower
    assert not hit and calls == 2 and int(outputs[0].data[0]) == 2
    with pytest.raises(asyncio.CancelledError):
        await leader
