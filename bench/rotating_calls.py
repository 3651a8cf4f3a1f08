"""Latency of several kinds of call measured side by side, so that drift on a busy
machine hits every kind alike (the cache and scale-out sections)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence


def timed_rounds(calls: Sequence[Callable[[int], object]], first: int, n: int) -> list[list[int]]:
    """n rounds of one call of each kind, in a rotating order; nanoseconds per call kind.

    Round i passes i to every call (calls use it to pick fresh inputs). The collector
    is paused so that it does not land inside a call.
    """
    latencies: list[list[int]] = [[] for _ in calls]
    order = list(range(len(calls)))
    gc.collect()
    gc.disable()
    try:
        for i in range(first, first + n):
            for k in order[i % len(order) :] + order[: i % len(order)]:
                started = time.perf_counter_ns()
                calls[k](i)
                latencies[k].append(time.perf_counter_ns() - started)
    finally:
        gc.enable()
    return latencies
