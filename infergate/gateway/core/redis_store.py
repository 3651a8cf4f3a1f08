"""The two-level CacheStore: this process's LRU in front of a Redis every replica shares.

A lookup tries the local LRU, then Redis; an answer found in Redis is kept locally
for the rest of its Redis TTL. A stored answer goes to both, with a TTL on every
Redis entry (the model's response_cache_ttl_ms, else `default_ttl_s`).

Invalidation across replicas (docs/scale-out.md): each model has a generation
record in Redis, a hash `<prefix>:gen:<model>` whose field "*" covers every version
and whose field "<version>" covers one. Both are random tokens. The tokens are
part of every entry's key, locally and in Redis, so invalidating is one HSET of a
fresh token: the old entries are never looked up again and expire by their TTL.
Nothing is scanned or deleted, so invalidating costs the same with a million
entries as with none, and an entry a slow replica writes under the old token
after the invalidation is just as unreachable. Random tokens rather than counters:
a generation record lost (expired, evicted, Redis restarted empty) is recreated
with a new token, never one that old entries may still carry.

Each replica remembers a model's tokens for at most `invalidation_lag_s`, so
another replica's invalidation is seen within that time (its own, at once);
between those reads a local hit costs no network at all.

Redis failing never fails a request (fail open): RedisLink bounds every call and
opens its circuit, lookups fall back to the local LRU alone, and values Redis
holds that this version did not write for that key are misses (cache_codec).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from redis.asyncio import Redis
from redis.exceptions import RedisError

from infergate.gateway.core import cache_codec
from infergate.gateway.core.cache import CacheKey, CacheStats, CacheStore, Outputs
from infergate.gateway.core.lru_store import LRUStore
from infergate.gateway.core.redis_link import RedisLink, RedisStats, RedisUnavailable
from infergate.gateway.core.request import OutputTensor
from infergate.settings import Settings, SettingsError

log = logging.getLogger(__name__)

_ALL_VERSIONS = "*"
_NO_TOKEN = "-"
# The generation tag of a namespace whose tokens Redis could not tell yet: such
# entries are local only and unreachable once Redis answers.
_LOCAL_ONLY = "?"
_WARN_INTERVAL_S = 60.0
# A generation record expires too (every key we write does), this long after a
# replica last read it. Safe at any length: a record recreated has a new token, so
# the worst an expiry does is turn the model's older entries into misses.
_GENERATION_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class TierStats:
    """Where lookups were answered, and how Redis fared (counts since start)."""

    local_hits: int
    redis_hits: int
    misses: int
    corrupt: int  # values in Redis under our keys that were not ours to read: misses
    write_failures: int  # answers not stored in Redis (unavailable, refused)
    skipped_writes: int  # answers larger than max_value_bytes: kept locally only
    redis: RedisStats


@dataclass
class _Generation:
    tag: str
    read_at: float


class TwoLevelStore:
    """A CacheStore (infergate.gateway.core.cache) over an LRUStore and a RedisLink."""

    def __init__(
        self,
        local: LRUStore,
        link: RedisLink,
        *,
        default_ttl_s: float = 3600.0,
        invalidation_lag_s: float = 1.0,
        max_value_bytes: int = 64 * 1024 * 1024,
        prefix: str = "infergate",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if default_ttl_s <= 0:
            raise ValueError(
                f"default_ttl_s must be > 0: every Redis entry expires, not {default_ttl_s}"
            )
        self.local = local
        self.link = link
        self.default_ttl_s = default_ttl_s
        self.invalidation_lag_s = invalidation_lag_s
        self.max_value_bytes = max_value_bytes
        self.prefix = prefix
        self._clock = clock
        self._generations: dict[tuple[str, str], _Generation] = {}
        # Bumped by every invalidation here: a token read that started before one
        # must not be remembered after it.
        self._epoch = 0
        # Invalidations Redis did not take (it was away): sent again once it answers.
        self._pending: set[tuple[str, str | None]] = set()
        self._local_hits = self._redis_hits = self._misses = 0
        self._corrupt = self._write_failures = self._skipped_writes = 0
        self._last_warning = -_WARN_INTERVAL_S

    # ---- CacheStore ----------------------------------------------------------------

    async def get(self, key: CacheKey) -> Outputs | None:
        tag = await self._tag(key.model, key.version)
        local_key = _local_key(key, tag)
        found = await self.local.get(local_key)
        if found is not None:
            self._local_hits += 1
            return found
        if tag == _LOCAL_ONLY:
            self._misses += 1
            return None
        redis_key = self._entry_key(key, tag)
        try:
            value, pttl_ms = await self.link.call(lambda r: _get_with_ttl(r, redis_key))
        except (RedisUnavailable, RedisError):
            # RedisError: Redis answered with an error (a foreign key of another type).
            self._misses += 1
            return None
        if value is None:
            self._misses += 1
            return None
        try:
            outputs = cache_codec.decode(key.digest, value)
        except cache_codec.CorruptEntry as exc:
            self._corrupt += 1
            self._misses += 1
            self._warn("Redis key %s holds no entry of ours (%s): taken for a miss", redis_key, exc)
            return None
        # Locally for no longer than Redis keeps it (-1: no TTL, set by someone else).
        ttl_s = pttl_ms / 1000 if pttl_ms > 0 else self.default_ttl_s
        await self.local.put(local_key, outputs, ttl_s)
        self._redis_hits += 1
        return outputs

    async def put(self, key: CacheKey, outputs: Sequence[OutputTensor], ttl_s: float) -> bool:
        ttl_s = ttl_s if ttl_s > 0 else self.default_ttl_s
        tag = await self._tag(key.model, key.version)
        stored = await self.local.put(_local_key(key, tag), outputs, ttl_s)
        if tag == _LOCAL_ONLY:
            return stored
        value = cache_codec.encode(key.digest, outputs)
        if len(value) > self.max_value_bytes:
            self._skipped_writes += 1
            return stored
        redis_key = self._entry_key(key, tag)
        ttl_ms = max(1, round(ttl_s * 1000))
        try:
            await self.link.call(lambda r: r.set(redis_key, value, px=ttl_ms))
        except (RedisUnavailable, RedisError):
            self._write_failures += 1
            return stored
        return True

    async def invalidate(self, model: str, version: str | None = None) -> int:
        """Drop the local entries now and give the namespace a fresh token in Redis.

        Returns the local entries dropped: those in Redis are not counted (nothing
        there is touched; they expire).
        """
        self._epoch += 1
        for namespace in [n for n in self._generations if _covers(model, version, *n)]:
            del self._generations[namespace]
        dropped = await self.local.invalidate(model, version)
        self._pending.add((model, version))
        await self._send_pending()
        return dropped

    def stats(self) -> CacheStats:
        local = self.local.stats()
        return CacheStats(
            entries=local.entries,
            used_bytes=local.used_bytes,
            max_bytes=local.max_bytes,
            hits=self._local_hits + self._redis_hits,
            misses=self._misses,
            evictions=local.evictions,
            expirations=local.expirations,
        )

    def tier_stats(self) -> TierStats:
        return TierStats(
            local_hits=self._local_hits,
            redis_hits=self._redis_hits,
            misses=self._misses,
            corrupt=self._corrupt,
            write_failures=self._write_failures,
            skipped_writes=self._skipped_writes,
            redis=self.link.stats(),
        )

    # ---- keys and generations ------------------------------------------------------

    def _entry_key(self, key: CacheKey, tag: str) -> str:
        return f"{self.prefix}:{_part(key.model)}:{_part(key.version)}:{tag}:{key.digest.hex()}"

    def generation_key(self, model: str) -> str:
        return f"{self.prefix}:gen:{_part(model)}"

    async def _tag(self, model: str, version: str) -> str:
        """The namespace's generation tag: remembered, read from Redis, or local-only."""
        namespace = (model, version)
        known = self._generations.get(namespace)
        now = self._clock()
        if known is not None and now - known.read_at < self.invalidation_lag_s:
            return known.tag
        if self._pending:
            await self._send_pending()
        epoch = self._epoch
        key = self.generation_key(model)
        try:
            tokens = await self.link.call(lambda r: _read_generation(r, key, version))
        except (RedisUnavailable, RedisError):
            # Keep answering from what this replica knew; Redis is retried next time.
            return known.tag if known is not None else _LOCAL_ONLY
        tag = f"{tokens[0]}.{tokens[1]}"
        if epoch == self._epoch:
            if known is not None and known.tag != tag:
                # Another replica invalidated: free the memory now, not at eviction.
                await self.local.invalidate(model, version)
            self._generations[namespace] = _Generation(tag, now)
        return tag

    async def _send_pending(self) -> None:
        for model, version in list(self._pending):
            key = self.generation_key(model)
            field = _ALL_VERSIONS if version is None else version
            token = secrets.token_hex(8)
            try:
                await self.link.call(_setter(key, field, token))
            except (RedisUnavailable, RedisError) as exc:
                self._warn(
                    "invalidating model %s in Redis failed (%s): other replicas may serve its "
                    "old answers until Redis answers again",
                    model,
                    exc,
                )
                return
            self._pending.discard((model, version))

    def _warn(self, message: str, *args: Any) -> None:
        now = self._clock()
        if now - self._last_warning >= _WARN_INTERVAL_S:
            self._last_warning = now
            log.warning(message, *args)


async def _get_with_ttl(client: Redis, key: str) -> tuple[bytes | None, int]:
    async with client.pipeline(transaction=False) as pipe:
        pipe.get(key)
        pipe.pttl(key)
        value, pttl_ms = await pipe.execute()
    return value, int(pttl_ms)


async def _read_generation(client: Redis, key: str, version: str) -> tuple[str, str]:
    """The ("*" token, version token) of a model, creating the "*" token if missing."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hsetnx(key, _ALL_VERSIONS, secrets.token_hex(8))
        pipe.hmget(key, [_ALL_VERSIONS, version])
        pipe.expire(key, _GENERATION_TTL_S)
        _, (every, one), _ = await pipe.execute()
    return _token(every), _token(one)


def _setter(key: str, field: str, token: str) -> Callable[[Redis], Awaitable[object]]:
    async def hset(client: Redis) -> object:
        async with client.pipeline(transaction=False) as pipe:
            pipe.hset(key, field, token)
            pipe.expire(key, _GENERATION_TTL_S)
            return await pipe.execute()

    return hset


def _token(raw: bytes | None) -> str:
    # Tokens are hex; anything else under our key is taken as it is, escaped.
    return _NO_TOKEN if raw is None else _part(raw.decode("utf-8", "replace"))


def _local_key(key: CacheKey, tag: str) -> CacheKey:
    # Same namespace, so the LRU's invalidation by model and version still applies.
    return CacheKey(key.model, key.version, key.digest + tag.encode())


def _part(text: str) -> str:
    """A key component with ':' (the separator) and anything unprintable escaped."""
    return quote(text, safe="")


def _covers(model: str, version: str | None, m: str, v: str) -> bool:
    return m == model and (version is None or v == version)


def cache_store(settings: Settings, link: RedisLink | None) -> CacheStore:
    """The gateway's response cache store: the LRU alone, or in front of Redis."""
    local = LRUStore(settings.response_cache_mb * 1024 * 1024)
    if link is None:
        return local
    if settings.cache_redis_ttl_s <= 0:
        raise SettingsError("cache_redis_ttl_s must be > 0: every shared entry expires")
    return TwoLevelStore(
        local,
        link,
        default_ttl_s=settings.cache_redis_ttl_s,
        invalidation_lag_s=settings.cache_redis_invalidation_lag_s,
    )
