"""The circuit breaker: opens after consecutive failures, refuses while open, lets one
probe through when the cool-down is over, closes on its success."""

from __future__ import annotations

import pytest

from infergate.gateway.core.circuit import Breaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = Breaker(failures_to_open=3, open_s=1.0, clock=clock)
    assert breaker.allow() and not breaker.failed()
    assert breaker.allow() and not breaker.failed()
    assert not breaker.succeeded()  # a success in between starts the count again
    assert not breaker.failed() and not breaker.failed()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failed()  # the third in a row
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()


def test_one_probe_after_the_cool_down_closes_it_on_success() -> None:
    clock = Clock()
    breaker = Breaker(failures_to_open=1, open_s=1.0, clock=clock)
    breaker.failed()
    clock.now += 0.99
    assert not breaker.allow()
    clock.now += 0.02
    assert breaker.allow()  # the probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow()  # nobody else while it is out
    assert breaker.succeeded()  # closed again: reported once
    assert breaker.allow() and breaker.allow()


def test_a_failed_probe_opens_it_for_another_cool_down() -> None:
    clock = Clock()
    breaker = Breaker(failures_to_open=2, open_s=1.0, clock=clock)
    breaker.failed()
    assert breaker.failed()
    clock.now += 1.0
    assert breaker.allow()
    assert not breaker.failed()  # still open, not newly opened
    assert breaker.state is CircuitState.OPEN
    assert breaker.opened_at == 100.0  # down since the first opening
    clock.now += 0.5
    assert not breaker.allow()
    clock.now += 0.5
    assert breaker.allow()


def test_a_cancelled_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = Breaker(failures_to_open=1, open_s=1.0, clock=clock)
    breaker.failed()
    clock.now += 1.0
    assert breaker.allow()
    breaker.abandoned()
    assert breaker.allow()
    assert breaker.state is CircuitState.HALF_OPEN


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Breaker(failures_to_open=0)
    with pytest.raises(ValueError):
        Breaker(open_s=0)
