"""The in-process CacheStore: an LRU bounded in bytes, with an optional TTL per entry.

The byte bound is global: one store serves every model that enables the cache.
Lookups, stores and invalidations run on the event loop and never wait; stats()
may be read from the metrics thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache

from infergate.gateway.core.cache import CacheKey, CacheStats, Outputs
from infergate.gateway.core.request import OutputTensor

# Bookkeeping per entry beyond the arrays (key, tuple, dataclasses): an estimate,
# so that many tiny entries still count against the bound.
_ENTRY_OVERHEAD_BYTES = 256

# (model, version): the namespace one invalidation drops.
_Namespace = tuple[str, str]


@dataclass(frozen=True)
class _Entry:
    outputs: Outputs
    expires_at: float | None  # the store's clock; None: never
    nbytes: int


@dataclass
class _Counters:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0


class _ByteLRU(LRUCache[CacheKey, _Entry]):
    """cachetools' LRU, telling its owner what it evicts."""

    def __init__(self, max_bytes: int, evicted: Callable[[CacheKey], None]) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=lambda entry: entry.nbytes)
        self._evicted = evicted

    def popitem(self) -> tuple[CacheKey, _Entry]:
        item = super().popitem()
        self._evicted(item[0])
        return item


class LRUStore:
    """A CacheStore in this process's memory (see infergate.gateway.core.cache)."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._counters = _Counters()
        self._entries = _ByteLRU(max(1, max_bytes), self._on_evicted)
        # Keys by namespace, so that invalidating one model never scans the others'.
        self._namespaces: dict[_Namespace, set[CacheKey]] = {}
        self._clock = clock

    async def get(self, key: CacheKey) -> Outputs | None:
        entry = self._entries.get(key)  # marks it most recently used
        if entry is not None and entry.expires_at is not None and self._clock() >= entry.expires_at:
            self._drop(key)
            self._counters.expirations += 1
            entry = None
        if entry is None:
            self._counters.misses += 1
            return None
        self._counters.hits += 1
        return entry.outputs

    async def put(self, key: CacheKey, outputs: Sequence[OutputTensor], ttl_s: float = 0.0) -> bool:
        """Store a response; False when it alone is larger than the whole store."""
        # Copies: a slice of a batch's output would keep the whole batch alive.
        owned = tuple(OutputTensor(o.name, o.datatype, o.data.copy()) for o in outputs)
        nbytes = _ENTRY_OVERHEAD_BYTES + sum(_nbytes(o.data) for o in owned)
        if nbytes > self.max_bytes:
            return False
        expires = self._clock() + ttl_s if ttl_s > 0 else None
        # Insert first: making room may evict this very key's older entry.
        self._entries[key] = _Entry(owned, expires, nbytes)
        self._namespaces.setdefault((key.model, key.version), set()).add(key)
        return True

    async def invalidate(self, model: str, version: str | None = None) -> int:
        namespaces = [
            (m, v) for m, v in self._namespaces if m == model and (version is None or v == version)
        ]
        dropped = 0
        for namespace in namespaces:
            for key in self._namespaces.pop(namespace):
                del self._entries[key]  # not popitem: an invalidation is not an eviction
                dropped += 1
        return dropped

    def stats(self) -> CacheStats:
        counters = self._counters
        return CacheStats(
            entries=len(self._entries),
            used_bytes=int(self._entries.currsize),
            max_bytes=self.max_bytes,
            hits=counters.hits,
            misses=counters.misses,
            evictions=counters.evictions,
            expirations=counters.expirations,
        )

    def _drop(self, key: CacheKey) -> None:
        del self._entries[key]
        self._forget_key(key)

    def _on_evicted(self, key: CacheKey) -> None:
        self._counters.evictions += 1
        self._forget_key(key)

    def _forget_key(self, key: CacheKey) -> None:
        namespace = (key.model, key.version)
        keys = self._namespaces.get(namespace)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._namespaces[namespace]


def _nbytes(array: np.ndarray) -> int:
    if array.dtype == object:
        return int(sum(len(e) if isinstance(e, bytes) else 64 for e in array.reshape(-1)))
    return int(array.nbytes)
