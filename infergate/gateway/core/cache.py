"""The response cache: the key, the store interface, and single flight over any store.

One cache serves every model that enables it (ModelConfig.response_cache.enable).
The key covers everything that decides the answer: model name and version, each
input's name, datatype, shape and bytes (in name order), and the requested outputs;
never the request id. The model and version also travel in the clear beside the
digest, as the key's namespace: what a store invalidates when a model's name or
version may come to mean other bytes, and what a shared tier puts in front of its
keys (`infergate:<model>:<version>:<digest>`).

Where answers are kept is a CacheStore (the in-process LRU is
infergate.gateway.core.lru_store.LRUStore); ResponseCache adds single flight on top.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

import numpy as np

from infergate.gateway.core.request import InputTensor, OutputTensor

Outputs = tuple[OutputTensor, ...]


class CacheKey(NamedTuple):
    """A response's key: its namespace (model, version) and a digest of the request.

    A tuple rather than a dataclass: it is hashed and compared on every lookup, and
    a tuple does both in C.
    """

    model: str
    version: str
    digest: bytes  # 256-bit BLAKE2b of everything that decides the answer

    def in_namespace(self, model: str, version: str | None) -> bool:
        """Whether invalidating `model` (one `version`, or all when None) covers this key."""
        return self.model == model and (version is None or self.version == version)


@dataclass(frozen=True)
class CacheStats:
    """A cache's figures, for DescribeModel and the metrics (counts since start)."""

    entries: int
    used_bytes: int
    max_bytes: int
    hits: int  # answers not computed for their caller (found, or shared)
    misses: int
    evictions: int  # dropped to stay within max_bytes
    expirations: int  # dropped because their TTL ran out
    shared: int = 0  # answered by waiting on an identical request in flight


class CacheStore(Protocol):
    """Where cached responses are kept: the in-process LRU, later a shared tier.

    The methods are coroutines so that a store across the network fits the same
    shape; an in-process store simply never waits. A store counts the hits and
    misses of its own lookups, its evictions and expirations; it never computes an
    answer (ResponseCache does that, once per key).
    """

    async def get(self, key: CacheKey) -> Outputs | None:
        """The stored response, or None (missing or expired)."""
        ...

    async def put(self, key: CacheKey, outputs: Sequence[OutputTensor], ttl_s: float) -> bool:
        """Store a response for `ttl_s` seconds (0: no expiry); False if not stored.

        The store keeps its own copy: the caller's arrays may be views of a batch.
        """
        ...

    async def invalidate(self, model: str, version: str | None = None) -> int:
        """Drop the responses of one model (of one version of it); returns how many."""
        ...

    def stats(self) -> CacheStats:
        """The store's figures; may be called from another thread (metrics scrape)."""
        ...


def cache_key(
    model: str, version: str, inputs: Sequence[InputTensor], outputs: Sequence[str]
) -> CacheKey:
    """The key of a response: a 256-bit BLAKE2b digest of what determines it."""
    h = hashlib.blake2b(digest_size=32)
    # Model and version are hashed as well, so the digest alone is unique too.
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
    return CacheKey(model, version, h.digest())


def _field(h: hashlib.blake2b, data: bytes | memoryview) -> None:
    # Length-prefixed, so no two different field sequences hash the same bytes.
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


class ResponseCache:
    """Single flight over any CacheStore: identical requests in flight are computed once.

    Single flight is a layer rather than part of the store interface because it is
    the same for every store (and a store across the network could not do it
    anyway: the waiting happens in this process). The first caller for a key claims
    it before it looks in the store, so callers that arrive while it looks (a slow
    store) or computes wait for its answer instead of computing their own.
    """

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self._inflight: dict[CacheKey, asyncio.Future[Outputs]] = {}
        self._shared = 0

    async def get_or_compute(
        self,
        key: CacheKey,
        compute: Callable[[], Awaitable[Sequence[OutputTensor]]],
        ttl_s: float = 0.0,
        looked_up: Callable[[bool], None] | None = None,
    ) -> tuple[Outputs, bool]:
        """The cached response, or compute it once for all identical callers.

        Returns (outputs, hit); a caller that waited on an identical request in
        flight counts as a hit, since its answer was not computed for it.
        `looked_up(hit)` is called once the lookup itself is over (for tracing).
        """
        while (pending := self._inflight.get(key)) is not None:
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
            self._shared += 1
            return outputs, True
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            found = await self.store.get(key)
            if looked_up is not None:
                looked_up(found is not None)
            if found is not None:
                future.set_result(found)
                return found, True
            outputs = tuple(await compute())
            future.set_result(outputs)
            # Not if the model's answers were invalidated meanwhile: this one may be stale.
            if self._inflight.get(key) is future:
                await self.store.put(key, outputs, ttl_s)
            return outputs, False
        except BaseException as exc:
            if not future.done():
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # retrieved here; waiters re-raise their own copy
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    async def invalidate(self, model: str, version: str | None = None) -> int:
        """Forget one model's answers (one version's, or every version's when None).

        Answers being computed for it now are not stored when they arrive, and
        later callers do not wait for them.
        """
        for key in [k for k in self._inflight if k.in_namespace(model, version)]:
            del self._inflight[key]
        return await self.store.invalidate(model, version)

    def stats(self) -> CacheStats:
        """The store's figures, with answers shared in flight counted as hits."""
        figures = self.store.stats()
        return replace(figures, hits=figures.hits + self._shared, shared=self._shared)
