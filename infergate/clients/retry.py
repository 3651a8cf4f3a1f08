"""When a failed call is tried again, and after how long.

Only calls that are safe to repeat are retried, and only on the statuses that say the
request never reached a server able to take it (UNAVAILABLE: not connected yet, the
gateway restarting, the model reloading). Safe: reads (metadata, readiness, statistics,
listing). Not safe: registering, updating and unregistering models, which change
state; inference only when the caller says so (`infer(..., retry=True)`), since a
model with side effects, or a caller that counts requests, may mind a repeat.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc


def _retried_codes() -> frozenset[grpc.StatusCode]:
    return frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, within the call's deadline."""

    attempts: int = 3  # in all, the first one included; 1 never retries
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    codes: frozenset[grpc.StatusCode] = field(default_factory=_retried_codes)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and the multiplier >= 1")

    def delay_s(
        self, attempt: int, code: grpc.StatusCode, repeatable: bool, remaining_s: float | None
    ) -> float | None:
        """Seconds to wait before trying again after attempt number `attempt` (from 1)
        failed with `code`; None: give up and raise. `remaining_s`: the time left
        before the call's deadline (None: no deadline)."""
        if not repeatable or code not in self.codes or attempt >= self.attempts:
            return None
        growth = self.multiplier ** (attempt - 1)
        backoff_s = min(self.max_backoff_s, self.initial_backoff_s * growth)
        # Full jitter: clients that failed together do not all come back together.
        delay_s = random.uniform(0.0, backoff_s)
        if remaining_s is not None and delay_s >= remaining_s:
            return None
        return delay_s


NO_RETRY = RetryPolicy(attempts=1)
