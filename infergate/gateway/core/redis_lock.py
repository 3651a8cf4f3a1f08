"""A lock in Redis with a lease: one holder at a time, whichever replica asks.

Taking it is `SET key "<holder> <token>" NX PX <lease>`: it succeeds only while the
key is free, and the random token says whose it is. While held, a task renews the
lease every third of it with a compare-and-PEXPIRE script; releasing is a
compare-and-DEL script, so a holder never renews or deletes a lock that has passed
to someone else (after its lease ran out). A holder that dies or loses Redis stops
renewing, and the lock frees itself when the lease runs out: nobody waits forever
on a crashed replica.

What a lease cannot do: stop a holder that was paused (SIGSTOP, a swapping host)
for longer than the lease from going on once it wakes, although the lock has
passed to another replica meanwhile. The renewal notices (its script finds
another token) and logs it; what the lock protects here (the model repository)
is written with atomic renames and refuses a version that already exists, so even
then each write lands whole. The Redis docs' "Redlock" discussion covers the limit.

Waiting polls every `poll_s` (with jitter): locks are taken for model changes,
which are rare and slow (seconds), so a notification channel would buy nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from infergate.gateway.core.redis_link import RedisLink

log = logging.getLogger(__name__)

# KEYS[1] the lock, ARGV[1] the value the holder set.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
# ARGV[2]: the new lease in milliseconds.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class LockBusy(Exception):
    """The lock stayed taken for as long as the caller was willing to wait."""

    def __init__(self, key: str, holder: str, waited_s: float) -> None:
        super().__init__(f"{key} is held by {holder or 'someone'} (waited {waited_s:.1f}s)")
        self.key = key
        self.holder = holder
        self.waited_s = waited_s


@dataclass
class Lease:
    """A lock as one holder took it."""

    key: str
    value: str  # "<holder> <token>"
    # Set when a renewal found the lock gone or passed on: the holder's exclusion
    # ended before it let go.
    lost: bool = False
    renewals: int = field(default=0)
    released: bool = False  # the holder let go: no more renewals


class RedisLock:
    """Leased locks over a RedisLink (see the module doc); RedisUnavailable passes through."""

    def __init__(
        self,
        link: RedisLink,
        *,
        lease_s: float = 30.0,
        poll_s: float = 0.05,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if lease_s <= 0 or poll_s <= 0:
            raise ValueError("lease_s and poll_s must be > 0")
        self.link = link
        self.lease_s = lease_s
        self.poll_s = poll_s
        self._clock = clock

    @property
    def lease_ms(self) -> int:
        return max(1, round(self.lease_s * 1000))

    async def try_acquire(self, key: str, holder: str) -> Lease | None:
        """The lock if it is free now, else None."""
        value = f"{holder} {secrets.token_hex(8)}"
        lease_ms = self.lease_ms

        async def take(client: Redis) -> object:
            return await client.set(key, value, nx=True, px=lease_ms)

        taken = await self.link.call(take)
        return Lease(key, value) if taken else None

    async def holder(self, key: str) -> str:
        """Who holds the lock now ("" if nobody)."""

        async def read(client: Redis) -> bytes | str | None:
            return await client.get(key)

        raw = await self.link.call(read)
        if raw is None:
            return ""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return text.rsplit(" ", 1)[0]

    async def acquire(self, key: str, holder: str, wait_s: float) -> Lease:
        """The lock, waiting up to `wait_s` for it; LockBusy after that."""
        loop = asyncio.get_running_loop()
        now = self._clock or loop.time
        started = now()
        while True:
            lease = await self.try_acquire(key, holder)
            if lease is not None:
                return lease
            waited = now() - started
            if waited >= wait_s:
                raise LockBusy(key, await self.holder(key), waited)
            # Jitter: two waiters that lost to the same holder do not poll in step.
            await asyncio.sleep(min(self.poll_s * random.uniform(0.5, 1.5), wait_s - waited))

    async def renew(self, lease: Lease) -> bool:
        """Extend the lease; False (and `lease.lost`) if the lock is no longer ours."""
        lease_ms = self.lease_ms

        async def extend(client: Redis) -> object:
            return await client.eval(_RENEW, 1, lease.key, lease.value, str(lease_ms))

        kept = bool(await self.link.call(extend))
        if kept:
            lease.renewals += 1
        else:
            lease.lost = True
        return kept

    async def release(self, lease: Lease) -> bool:
        """Let go; False if it was no longer ours (its lease had run out)."""

        async def delete(client: Redis) -> object:
            return await client.eval(_RELEASE, 1, lease.key, lease.value)

        return bool(await self.link.call(delete))

    @contextlib.asynccontextmanager
    async def hold(self, key: str, holder: str, wait_s: float) -> AsyncIterator[Lease]:
        """Take the lock (waiting up to `wait_s`) and hold it for the block (see `held`)."""
        lease = await self.acquire(key, holder, wait_s)
        async with self.held(lease):
            yield lease

    @contextlib.asynccontextmanager
    async def held(self, lease: Lease) -> AsyncIterator[Lease]:
        """Keep a lease taken with try_acquire/acquire renewed for the block, then let go,
        however the block ends (a release Redis does not take expires with the lease)."""
        renewing = asyncio.get_running_loop().create_task(self._keep(lease))
        try:
            yield lease
        finally:
            lease.released = True
            # Cancelled again until done: a cancellation landing while redis-py tears
            # down a connection can come out as a connection error instead.
            while not renewing.done():
                renewing.cancel()
                await asyncio.wait({renewing}, timeout=1.0)
            try:
                await self.release(lease)
            except Exception as exc:  # the lease runs out by itself
                log.warning(
                    "releasing %s failed (%s); it frees itself within %.0fs",
                    lease.key,
                    exc,
                    self.lease_s,
                )

    async def _keep(self, lease: Lease) -> None:
        while not lease.released:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self.renew(lease):
                    log.error(
                        "lost %s: its lease ran out before it was renewed (was this process "
                        "paused?); another holder may have it",
                        lease.key,
                    )
                    return
            except Exception as exc:
                # Redis away: try again; the lease covers two missed renewals.
                log.warning("renewing %s failed: %s", lease.key, exc)
