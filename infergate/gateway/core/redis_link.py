"""One gateway's connection to the shared Redis: a pool, hard time bounds, a circuit.

Everything that talks to Redis (the shared cache tier today; the registry events
every replica follows next) goes through one RedisLink, so they share its pool, its
timeouts and its verdict on whether Redis is there at all. `call()` either returns
the operation's result within `connect_timeout_s + timeout_s`, or raises
RedisUnavailable: Redis is down, slow or refused, or the circuit is open and the
call was not even tried. Callers then carry on without Redis (fail open).

redis-py's own retries are off: a retry would double the time a request may wait,
and the circuit decides when to try again. A command cut short by a timeout or a
cancellation disconnects its connection (redis-py does that), so a late reply is
never read as the answer to the next command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infergate.gateway.core.circuit import Breaker, CircuitState
from infergate.settings import Settings, SettingsError

log = logging.getLogger(__name__)

T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis did not answer in time, refused, or the circuit is open: go on without it."""


@dataclass(frozen=True)
class RedisOptions:
    url: str  # redis://[user:password@]host:port/db, rediss://..., unix://...
    timeout_s: float = 0.02  # one command, once connected (and the wait for a pooled connection)
    connect_timeout_s: float = 0.05
    # After the circuit opens, how long calls are refused before one probes again.
    retry_after_s: float = 1.0
    failures_to_open: int = 3
    max_connections: int = 32
    # While Redis stays away, at most one log line per this many seconds.
    log_interval_s: float = 30.0

    @property
    def bound_s(self) -> float:
        """The longest any call may take: connecting plus one command."""
        return self.connect_timeout_s + self.timeout_s


@dataclass(frozen=True)
class RedisStats:
    """The link's figures (counts since start), for DescribeModel-style reports and metrics."""

    state: str  # the circuit: closed, open, half_open
    calls: int  # sent to Redis
    failures: int  # of those: timed out, connection refused or lost
    errors: int  # of those: Redis answered with an error (wrong type, ...): not counted as down
    skipped: int  # not sent: the circuit was open
    opened: int  # times the circuit opened


class RedisLink:
    """A pooled asyncio Redis client behind a circuit breaker (see the module doc)."""

    def __init__(
        self,
        options: RedisOptions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if options.timeout_s <= 0 or options.connect_timeout_s <= 0:
            raise ValueError("Redis timeouts must be > 0")
        self.options = options
        self._pool = BlockingConnectionPool.from_url(
            options.url,
            max_connections=options.max_connections,
            timeout=options.timeout_s,
            socket_timeout=options.timeout_s,
            socket_connect_timeout=options.connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.client: Redis = Redis(connection_pool=self._pool)
        kwargs = self._pool.connection_kwargs
        # Where, for log lines: never the URL, which may hold a password.
        self.where = (
            str(kwargs["path"])
            if "path" in kwargs
            else f"{kwargs.get('host')}:{kwargs.get('port')}"
        )
        self._breaker = Breaker(options.failures_to_open, options.retry_after_s, clock)
        self._clock = clock
        self._calls = self._failures = self._errors = self._skipped = self._opened = 0
        self._skipped_at_open = self._skipped_at_log = 0
        self._last_log = 0.0

    @property
    def available(self) -> bool:
        """False while the circuit is open: calls now would be refused unsent."""
        return self._breaker.state is CircuitState.CLOSED

    async def call(self, operation: Callable[[Redis], Awaitable[T]]) -> T:
        """`operation(client)` within the time bound; RedisUnavailable if not.

        ResponseError (Redis answered, with an error) passes through: Redis is up,
        the command or the data is wrong, and the caller decides what that means.
        """
        if not self._breaker.allow():
            self._skipped += 1
            self._log_still_down()
            raise RedisUnavailable(f"Redis at {self.where}: circuit open")
        self._calls += 1
        try:
            async with asyncio.timeout(self.options.bound_s):
                result = await operation(self.client)
        except ResponseError:
            self._errors += 1
            self._succeeded()
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            # redis-py's TimeoutError and ConnectionError are RedisErrors;
            # asyncio.timeout raises the builtin TimeoutError.
            self._failed(exc)
            raise RedisUnavailable(f"Redis at {self.where}: {_describe(exc)}") from exc
        except BaseException:
            self._breaker.abandoned()  # cancelled: no verdict on Redis
            raise
        self._succeeded()
        return result

    def stats(self) -> RedisStats:
        return RedisStats(
            state=self._breaker.state.value,
            calls=self._calls,
            failures=self._failures,
            errors=self._errors,
            skipped=self._skipped,
            opened=self._opened,
        )

    async def aclose(self) -> None:
        await self.client.aclose()
        await self._pool.aclose()

    def _succeeded(self) -> None:
        if self._breaker.succeeded():
            down_s = self._clock() - self._breaker.opened_at
            log.info(
                "Redis at %s answers again after %.1fs without it (%d calls skipped meanwhile)",
                self.where,
                down_s,
                self._skipped - self._skipped_at_open,
            )

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        if self._breaker.failed():
            self._opened += 1
            self._last_log = self._clock()
            self._skipped_at_open = self._skipped_at_log = self._skipped
            log.warning(
                "Redis at %s failed %d times in a row (last: %s): going on without it, "
                "trying again every %.1fs",
                self.where,
                self._breaker.failures_to_open,
                _describe(exc),
                self.options.retry_after_s,
            )

    def _log_still_down(self) -> None:
        now = self._clock()
        if now - self._last_log >= self.options.log_interval_s:
            self._last_log = now
            log.warning(
                "Redis at %s still unavailable: %d calls skipped since the last report",
                self.where,
                self._skipped - self._skipped_at_log,
            )
            self._skipped_at_log = self._skipped


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, RedisConnectionError):
        return f"connection failed ({exc})"
    return f"{type(exc).__name__}: {exc}"


def link_from_settings(settings: Settings) -> RedisLink | None:
    """The gateway's Redis link, or None when no Redis is configured."""
    if not settings.cache_redis_url:
        return None
    options = RedisOptions(
        url=settings.cache_redis_url,
        timeout_s=settings.cache_redis_timeout_ms / 1000,
        connect_timeout_s=settings.cache_redis_connect_timeout_ms / 1000,
        retry_after_s=settings.cache_redis_retry_s,
    )
    if options.timeout_s <= 0 or options.connect_timeout_s <= 0 or options.retry_after_s <= 0:
        raise SettingsError(
            "cache_redis_timeout_ms, cache_redis_connect_timeout_ms and cache_redis_retry_s "
            "must be > 0"
        )
    try:
        return RedisLink(options)
    except ValueError as exc:
        # The URL itself is not quoted: it may hold a password.
        raise SettingsError(f"cache_redis_url: {exc}") from None
