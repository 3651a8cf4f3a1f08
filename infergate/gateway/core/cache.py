"""The response cache: an in-process LRU bounded in bytes, with optional TTL and
single flight (identical requests in flight at once are computed once).

One cache serves every model that enables it (ModelConfig.response_cache.enable),
so the byte bound is global. The key covers everything that decides the answer:
model name and version, each input's name, datatype, shape and bytes (in name
order), and the requested outputs; never the request id.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache

from infergate.gateway.core.request import InputTensor, OutputTensor

# Bookkeeping per entry beyond the arrays (key, tuple, dataclasses): an estimate,
# so that many tiny entries still count against the bound.
_ENTRY_OVERHEAD_BYTES = 256


@dataclass(frozen=True)
class CacheEntry:
    outputs: tuple[OutputTensor, ...]
    expires_at: float | None  # time.monotonic(); None: never
    nbytes: int


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    shared: int = 0  # answered by waiting on an identical request in flight


class _ByteLRU(LRUCache[bytes, CacheEntry]):
    """cachetools' LRU, counting what it evicts for the statistics."""

    def __init__(self, maxsize: int, counters: CacheCounters) -> None:
        super().__init__(maxsize=maxsize, getsizeof=lambda entry: entry.nbytes)
        self._counters = counters

    def popitem(self) -> tuple[bytes, CacheEntry]:
        item = super().popitem()
        self._counters.evictions += 1
        return item


def cache_key(
    model: str, version: str, inputs: Sequence[InputTensor], outputs: Sequence[str]
) -> bytes:
    """A 256-bit BLAKE2b digest of what determines a response."""
    h = hashlib.blake2b(digest_size=32)
    _field(h, model.encode())
    _field(h, version.encode())
    for tensor in sorted(inputs, key=lambda t: t.name):
        _field(h, tensor.name.encode())
        _field(h, tensor.datatype.encode())
        _field(h, np.asarray(tensor.shape, dtype="<i8").tobytes())
        data = tensor.data
        if data.dtype == object:
            for element in data.reshape(-1):
                _field(h, element if isinstance(element, bytes) else str(element).encode())
        else:
            # Hash the bytes where they lie: no copy for contiguous arrays.
            _field(h, np.ascontiguousarray(data).data.cast("B"))
    _field(h, b"outputs")
    for name in outputs:
        _field(h, name.encode())
    return h.digest()


def _field(h: hashlib.blake2b, data: bytes | memoryview) -> None:
    # Length-prefixed, so no two different field sequences hash the same bytes.
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


class ResponseCache:
    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.counters = CacheCounters()
        self._entries = _ByteLRU(max(1, max_bytes), self.counters)
        self._inflight: dict[bytes, asyncio.Future[tuple[OutputTensor, ...]]] = {}
        self._clock = clock

    @property
    def current_bytes(self) -> int:
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every stored response; counters and computations in flight stay."""
        # A fresh LRU rather than clear(): clearing pops items, counting evictions.
        self._entries = _ByteLRU(max(1, self.max_bytes), self.counters)

    def get(self, key: bytes) -> tuple[OutputTensor, ...] | None:
        entry = self._entries.get(key)  # marks it most recently used
        if entry is None:
            return None
        if entry.expires_at is not None and self._clock() >= entry.expires_at:
            del self._entries[key]
            self.counters.expirations += 1
            return None
        return entry.outputs

    def put(self, key: bytes, outputs: Sequence[OutputTensor], ttl_s: float = 0.0) -> bool:
        """Store a response; False when it alone is larger than the whole cache."""
        # Copies: a slice of a batch's output would keep the whole batch alive.
        owned = tuple(OutputTensor(o.name, o.datatype, o.data.copy()) for o in outputs)
        nbytes = _ENTRY_OVERHEAD_BYTES + sum(_nbytes(o.data) for o in owned)
        if nbytes > self.max_bytes:
            return False
        expires = self._clock() + ttl_s if ttl_s > 0 else None
        self._entries[key] = CacheEntry(owned, expires, nbytes)
        return True

    async def get_or_compute(
        self,
        key: bytes,
        compute: Callable[[], Awaitable[Sequence[OutputTensor]]],
        ttl_s: float = 0.0,
        looked_up: Callable[[bool], None] | None = None,
    ) -> tuple[tuple[OutputTensor, ...], bool]:
        """The cached response, or compute it once for all identical callers.

        Returns (outputs, hit); a caller that waited on an identical request in
        flight counts as a hit, since its answer was not computed for it.
        `looked_up(hit)` is called once the lookup itself is over (for tracing).
        """
        while True:
            found = self.get(key)
            if found is not None:
                self.counters.hits += 1
                if looked_up is not None:
                    looked_up(True)
                return found, True
            pending = self._inflight.get(key)
            if pending is None:
                break
            if looked_up is not None:
                looked_up(True)
                looked_up = None
            try:
                # shield: one waiter leaving must not cancel the work for the others.
                outputs = await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this caller went away
                continue  # the computing caller went away: look again, maybe compute
            self.counters.shared += 1
            self.counters.hits += 1
            return outputs, True
        self.counters.misses += 1
        if looked_up is not None:
            looked_up(False)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[OutputTensor, ...]] = loop.create_future()
        self._inflight[key] = future
        try:
            outputs = tuple(await compute())
        except BaseException as exc:
            if not future.done():
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # retrieved here; waiters re-raise their own copy
            raise
        finally:
            self._inflight.pop(key, None)
        self.put(key, outputs, ttl_s)
        future.set_result(outputs)
        return outputs, False


def _nbytes(array: np.ndarray) -> int:
    if array.dtype == object:
        return int(sum(len(e) if isinstance(e, bytes) else 64 for e in array.reshape(-1)))
    return int(array.nbytes)
