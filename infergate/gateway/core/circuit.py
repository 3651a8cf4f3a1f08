"""A circuit breaker for a dependency that may go away (the shared Redis tier).

Closed: calls go through. After `failures_to_open` consecutive failures it opens:
calls are refused at once, without touching the network, for `open_s`. Then it is
half-open: exactly one caller is let through as a probe; its success closes the
circuit, its failure opens it for another `open_s`. Callers that find the circuit
open or a probe already out are refused, so a dead dependency costs one call per
`open_s`, not one per request.

Runs on the event loop (no locks); `state` may be read from another thread.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # one probe is out


class Breaker:
    def __init__(
        self,
        failures_to_open: int = 3,
        open_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures_to_open < 1:
            raise ValueError(f"failures_to_open must be >= 1, not {failures_to_open}")
        if open_s <= 0:
            raise ValueError(f"open_s must be > 0, not {open_s}")
        self.failures_to_open = failures_to_open
        self.open_s = open_s
        self.state = CircuitState.CLOSED
        self.opened_at = 0.0  # the clock when it last opened
        self._open_until = 0.0
        self._consecutive_failures = 0
        self._clock = clock

    def allow(self) -> bool:
        """Whether a call may go out now (when half-open, the caller is the probe)."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN and self._clock() >= self._open_until:
            self.state = CircuitState.HALF_OPEN
            return True
        return False

    def succeeded(self) -> bool:
        """Record a call that worked; True when this closes an open circuit."""
        recovered = self.state is not CircuitState.CLOSED
        self.state = CircuitState.CLOSED
        self._consecutive_failures = 0
        return recovered

    def failed(self) -> bool:
        """Record a call that failed; True when this opens the circuit."""
        self._consecutive_failures += 1
        if self.state is CircuitState.HALF_OPEN:
            self._open(refused_since=self.opened_at)
            return False  # it was open already, as far as anyone watching is concerned
        if (
            self.state is CircuitState.CLOSED
            and self._consecutive_failures >= self.failures_to_open
        ):
            self._open(refused_since=self._clock())
            return True
        return False

    def abandoned(self) -> None:
        """A call that went out was cancelled before it could tell: no verdict.

        A cancelled probe must not leave the circuit half-open for ever: the next
        caller probes instead.
        """
        if self.state is CircuitState.HALF_OPEN:
            self.state = CircuitState.OPEN
            self._open_until = self._clock()

    def _open(self, refused_since: float) -> None:
        self.state = CircuitState.OPEN
        self.opened_at = refused_since
        self._open_until = self._clock() + self.open_s
