"""Progress spans: mapped into the whole, never backwards, not flooding."""

from __future__ import annotations

import pytest

from infergate.optimize import ProgressSpan


def test_sub_spans_map_onto_the_whole_and_never_go_back() -> None:
    seen: list[tuple[str, float, str]] = []
    whole = ProgressSpan(lambda s, f, m: seen.append((s, f, m)))
    first = whole.sub(0.0, 0.5)
    first.report("build", 0.5, "half of the first half")
    second = whole.sub(0.5, 1.0)
    second.sub(0.0, 0.5).report("gate", 1.0, "")
    first.report("build", 0.2, "late and lower")  # clamped: the whole never decreases
    whole.done("store", "done")
    fractions = [f for _, f, _ in seen]
    assert fractions == [0.25, 0.75, 0.75, 1.0]
    assert fractions == sorted(fractions)


def test_tiny_steps_in_one_stage_are_not_passed_on() -> None:
    seen: list[float] = []
    span = ProgressSpan(lambda s, f, m: seen.append(f))
    for i in range(1, 1001):
        span.report("calibrate", i / 1000)
    assert 100 < len(seen) <= 201 and seen[-1] == 1.0


def test_a_callback_that_raises_stops_the_work() -> None:
    def cancel(stage: str, fraction: float, message: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ProgressSpan(cancel).report("build", 0.1)
