"""Routing policies and the router, with fake arms of set latencies and a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np
import pytest

from infergate.backends.base import LoadedModel
from infergate.gateway.core.arms import COOL_DOWN_S, Arm, Circuit
from infergate.gateway.core.latency import LEAST_OF
from infergate.gateway.core.routing import (
    INLINE_AFTER_SAMPLES,
    MAX_REPROBE_AFTER_S,
    CostPolicy,
    FixedPolicy,
    LatencyPolicy,
    RoundRobinPolicy,
    Router,
    RunOptions,
    make_policy,
)
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import BackendFailed, InputRejected, InvalidInput, Unavailable
from infergate.schema.tensors import TensorSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TimedRuntime(LoadedModel):
    """Takes fixed + per_row * rows seconds of fake time; fails on cue."""

    def __init__(self, clock: Clock, fixed_s: float, per_row_s: float = 0.0) -> None:
        self.clock = clock
        self.fixed_s = fixed_s
        self.per_row_s = per_row_s
        self.failing = False
        self.calls = 0

    inputs: Sequence[TensorSpec] = ()  # type: ignore[assignment]
    outputs: Sequence[TensorSpec] = ()  # type: ignore[assignment]
    device = "cpu"  # type: ignore[assignment]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        rows = len(inputs["x"])
        self.clock.now += self.fixed_s + self.per_row_s * rows
        if self.failing:
            raise RuntimeError("runtime failed on cue")
        return {"y": inputs["x"] * 2}


class InlineExecutor(Executor):
    """Runs work at once in the calling thread: fake time stays deterministic."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class CountingExecutor(InlineExecutor):
    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def arm(clock: Clock, backend: str, fixed_s: float, per_row_s: float = 0.0) -> Arm:
    return Arm(backend, "cpu", "fp32", TimedRuntime(clock, fixed_s, per_row_s))


def simulate(
    policy: Any, arms: list[Arm], clock: Clock, batches: int, rows: int = 8, gap_s: float = 0.01
) -> Counter[str]:
    """Sequential batches: the chosen arm runs each; returns batches per arm."""
    chosen: Counter[str] = Counter()
    for _ in range(batches):
        first = policy.order([a for a in arms if a.usable(clock.now)], rows, clock.now)[0]
        runtime = first.runtime
        assert isinstance(runtime, TimedRuntime)
        seconds = runtime.fixed_s + runtime.per_row_s * rows
        clock.now += seconds
        first.record_success(rows, seconds, clock.now)
        chosen[first.backend] += 1
        clock.now += gap_s
    return chosen


def x(rows: int = 8) -> dict[str, np.ndarray]:
    return {"x": np.ones((rows, 2), np.float32)}


def test_latency_policy_converges_on_the_faster_arm() -> None:
    clock = Clock()
    arms = [arm(clock, "slow", 0.010), arm(clock, "fast", 0.004)]
    chosen = simulate(LatencyPolicy(), arms, clock, batches=200)
    assert chosen["fast"] >= 0.9 * 200
    assert arms[1].latency.predict_s(8) == pytest.approx(0.004, rel=0.05)


def test_it_moves_within_a_few_batches_after_the_fast_arm_slows_three_times() -> None:
    clock = Clock()
    a, b = arm(clock, "a", 0.004), arm(clock, "b", 0.006)
    policy = LatencyPolicy()
    simulate(policy, [a, b], clock, batches=100)
    assert isinstance(a.runtime, TimedRuntime)
    a.runtime.fixed_s = 0.012  # a slows down 3x
    order = []
    for _ in range(10):
        order.append(simulate(policy, [a, b], clock, batches=1).most_common(1)[0][0])
    switch = order.index("b")
    assert switch <= 3, order
    assert order[switch:].count("b") >= len(order[switch:]) - 1


def test_it_notices_when_a_neglected_arm_gets_faster() -> None:
    clock = Clock()
    a, b = arm(clock, "a", 0.004), arm(clock, "b", 0.010)
    policy = LatencyPolicy()
    simulate(policy, [a, b], clock, batches=100)
    assert isinstance(b.runtime, TimedRuntime)
    b.runtime.fixed_s = 0.001  # b became much faster while unused
    chosen = simulate(policy, [a, b], clock, batches=300, gap_s=0.02)
    assert chosen["b"] > chosen["a"]


def test_exploration_stays_within_its_budget_and_no_arm_starves() -> None:
    clock = Clock()
    arms = [arm(clock, "best", 0.001), arm(clock, "meh", 0.005), arm(clock, "worst", 0.009)]
    policy = LatencyPolicy(explore_fraction=0.05)
    simulate(policy, arms, clock, batches=2000, gap_s=0.01)
    assert policy.explored <= 0.05 * policy.batches
    # Every arm was re-measured recently: none is left stale for long.
    for a in arms:
        assert clock.now - a.last_used < 10 * policy.reprobe_after_s, a.backend
    assert arms[1].batches > 3 and arms[2].batches > 3


def probe_times(policy: Any, arms: list[Arm], clock: Clock, seconds: float) -> list[float]:
    """Sequential batches for `seconds` of fake time; when arms[1] ran each of its batches."""
    times = []
    end = clock.now + seconds
    while clock.now < end:
        if simulate(policy, arms, clock, batches=1)[arms[1].backend]:
            times.append(clock.now)
    return times


def test_an_arm_found_slow_again_and_again_is_probed_ever_less_often() -> None:
    clock = Clock()
    arms = [arm(clock, "best", 0.004), arm(clock, "slow", 0.036)]  # int8 vs fp32 mlp_large
    policy = LatencyPolicy(explore_fraction=0.05)
    times = probe_times(policy, arms, clock, seconds=300.0)
    gaps = [round(b - a) for a, b in itertools.pairwise(times[1:])]
    # A probe every 2 s would be 150 of them; each that finds it slow doubles the wait.
    assert gaps[:5] == [4, 8, 16, 32, 64], gaps
    assert all(g <= MAX_REPROBE_AFTER_S + 1 for g in gaps), gaps
    assert len(times) < 12, len(times)


def test_exploring_costs_at_most_its_fraction_of_time_not_just_of_batches() -> None:
    clock = Clock()
    arms = [arm(clock, "best", 0.001)] + [arm(clock, f"slow{i}", 0.030) for i in range(6)]
    policy = LatencyPolicy(explore_fraction=0.05)
    simulate(policy, arms, clock, batches=20000, gap_s=0.0)
    slow_s = sum(a.busy_s for a in arms[1:]) - 6 * 0.030  # less each arm's first batch
    # Counted in batches alone, 5% of them on arms 30x slower would be 60% of the time.
    assert slow_s <= 0.05 * arms[0].busy_s * 1.1, (slow_s, arms[0].busy_s)
    assert policy.explored_s <= 0.05 * policy.spent_s


def test_a_probe_that_finds_the_arm_close_keeps_probing_it_often() -> None:
    clock = Clock()
    arms = [arm(clock, "best", 0.004), arm(clock, "close", 0.005)]
    policy = LatencyPolicy(explore_fraction=0.05)
    times = probe_times(policy, arms, clock, seconds=60.0)
    assert len(times) >= 25, times  # every ~2 s: within 1.5x of the best, no back-off


def test_an_arm_on_the_same_device_takes_over_only_when_clearly_faster() -> None:
    clock = Clock()
    a, b = arm(clock, "a", 0.0040), arm(clock, "b", 0.0042)
    b.load = a.load  # one CPU, as the model wires arms on one device
    policy = LatencyPolicy(explore_fraction=0.0)
    simulate(policy, [a, b], clock, batches=20)
    assert isinstance(a.runtime, TimedRuntime)
    a.runtime.fixed_s = 0.0044  # b is now 5% faster: not worth evicting a's weights
    assert simulate(policy, [a, b], clock, batches=50)["b"] == 0
    a.runtime.fixed_s = 0.0050  # b 16% faster: it takes over
    assert simulate(policy, [a, b], clock, batches=50)["b"] >= 40


def test_one_stall_of_the_arm_in_use_does_not_hand_its_batches_to_a_close_arm() -> None:
    clock = Clock()
    a, b = arm(clock, "a", 0.0040), arm(clock, "b", 0.0043)
    b.load = a.load
    for arm_, seconds in ((a, 0.0040), (b, 0.0043)):  # the load-time profile
        for _ in range(8):
            arm_.record_success(8, seconds, clock.now)
    policy = LatencyPolicy(explore_fraction=0.0)
    assert policy.order([a, b], 8, clock.now)[0] is a
    # A busy machine stalls a's next call 3x: its prediction jumps ~40% over b's, but
    # its fastest recent calls say it is still the faster arm.
    a.record_success(8, 0.012, clock.now)
    assert a.latency.predict_s(8) > 1.3 * b.latency.predict_s(8)
    assert policy.order([a, b], 8, clock.now)[0] is a
    assert policy.switches == 0
    # Slowed for real (its next call too), it hands over.
    a.record_success(8, 0.012, clock.now)
    assert policy.order([a, b], 8, clock.now)[0] is b
    assert policy.switches == 1


def test_the_successor_of_a_slowed_arm_is_the_fastest_by_its_best_recent_call() -> None:
    clock = Clock()
    a, b, c = arm(clock, "a", 0.004), arm(clock, "b", 0.008), arm(clock, "c", 0.011)
    b.load = c.load = a.load  # three arms on one CPU
    for arm_, seconds in ((a, 0.004), (b, 0.008), (c, 0.011)):
        for _ in range(8):
            arm_.record_success(8, seconds, clock.now)
    # b's last probe ran cold (its weights out of cache): its prediction now runs
    # above c's, though b is the faster arm.
    b.record_success(8, 0.030, clock.now)
    assert b.latency.predict_s(8) > c.latency.predict_s(8)
    policy = LatencyPolicy(explore_fraction=0.0)
    assert policy.order([a, b, c], 8, clock.now)[0] is a
    a.record_success(8, 0.020, clock.now)  # a slows 5x, two calls in a row
    a.record_success(8, 0.020, clock.now)
    assert policy.order([a, b, c], 8, clock.now)[0] is b
    assert policy.switches == 1


def test_a_probe_that_finds_a_neglected_arm_faster_is_confirmed_at_once() -> None:
    clock = Clock()
    a, b = arm(clock, "a", 0.001), arm(clock, "b", 0.003)
    b.load = a.load
    # A start-up stall made a look slow, so b took its batches; a is really 3x faster.
    for _ in range(8):
        a.record_success(8, 0.010, clock.now)
        b.record_success(8, 0.003, clock.now)
    policy = LatencyPolicy(explore_fraction=0.05)
    assert simulate(policy, [a, b], clock, batches=1)["b"] == 1
    took_over_at = None
    start = clock.now
    while clock.now - start < 30.0:
        # Past its probe and confirmation, a batch on a means a holds the batches.
        if simulate(policy, [a, b], clock, batches=1)["a"] and a.batches >= 8 + 3:
            took_over_at = clock.now - start
            break
    assert took_over_at is not None
    # The first probe comes after REPROBE_AFTER_S (2 s); its confirmation is the next
    # batch. One probe every 2 s alone took over 4 s (the second probe).
    assert took_over_at < 2.5, took_over_at
    assert simulate(policy, [a, b], clock, batches=100)["a"] >= 90


def test_new_arms_are_measured_first() -> None:
    clock = Clock()
    arms = [arm(clock, "a", 0.001), arm(clock, "b", 0.002)]
    chosen = simulate(LatencyPolicy(explore_fraction=0.0), arms, clock, batches=2)
    assert chosen == Counter({"a": 1, "b": 1})


def test_overflow_goes_to_another_device_exactly_when_it_finishes_sooner() -> None:
    clock = Clock()
    fast = arm(clock, "fast", 0.010)
    slow = Arm("slow", "cuda:0", "fp32", TimedRuntime(clock, 0.025))
    for a in (fast, slow):
        a.record_success(8, a.runtime.fixed_s, clock.now)  # type: ignore[attr-defined]
    policy = LatencyPolicy(explore_fraction=0.0)
    # The fast arm's device has one batch with 10 ms left: 10 + 10 = 20 ms < 25 ms.
    fast.load.running[1] = (clock.now, 0.010)
    assert policy.order([fast, slow], 8, clock.now)[0] is fast
    # Two batches ahead there: 20 + 10 = 30 ms > 25 ms: overflow to the other device.
    fast.load.running[2] = (clock.now, 0.010)
    assert policy.order([fast, slow], 8, clock.now)[0] is slow
    # 6 ms later: 14 + 10 = 24 ms < 25 ms: the fast arm again.
    clock.now += 0.006
    assert policy.order([fast, slow], 8, clock.now)[0] is fast


def test_arms_on_the_same_device_share_its_backlog_so_there_is_no_overflow() -> None:
    clock = Clock()
    fast, slow = arm(clock, "fast", 0.010), arm(clock, "slow", 0.025)  # both on the CPU
    Router("m", [fast, slow], LatencyPolicy(), InlineExecutor(), clock)
    for a in (fast, slow):
        a.record_success(8, a.runtime.fixed_s, clock.now)  # type: ignore[attr-defined]
    assert fast.load is slow.load
    for batch_id in range(5):
        fast.load.running[batch_id] = (clock.now, 0.010)
    # Whatever is queued on the CPU is ahead of either arm: the faster one still wins.
    assert LatencyPolicy(explore_fraction=0.0).order([fast, slow], 8, clock.now)[0] is fast


def test_fixed_policy_sticks_to_its_arm() -> None:
    clock = Clock()
    arms = [arm(clock, "fast", 0.001), arm(clock, "slow", 0.010)]
    chosen = simulate(FixedPolicy("slow"), arms, clock, batches=50)
    assert chosen == Counter({"slow": 50})


def test_round_robin_takes_turns() -> None:
    clock = Clock()
    arms = [arm(clock, n, 0.001 * (i + 1)) for i, n in enumerate("abc")]
    chosen = simulate(RoundRobinPolicy(), arms, clock, batches=30)
    assert chosen == Counter({"a": 10, "b": 10, "c": 10})


def test_cost_policy_prefers_the_cheapest_within_budget() -> None:
    clock = Clock()
    cpu = arm(clock, "cpu_arm", 0.020)
    gpu = Arm("gpu_arm", "cuda:0", "fp32", TimedRuntime(clock, 0.002))
    for a in (cpu, gpu):
        a.record_success(8, a.runtime.fixed_s, clock.now)  # type: ignore[attr-defined]
    # Per 1000 rows: cpu 0.1 $/h * 20 ms/8 rows -> ...; gpu 3 $/h * 2 ms/8 rows: cpu cheaper.
    policy = CostPolicy({"cpu": 0.10, "cuda": 3.00})
    assert policy.order([cpu, gpu], 8, clock.now)[0] is cpu
    assert policy.cost_per_1000(cpu, 8) == pytest.approx(0.10 / 3600 * 0.020 / 8 * 1000)
    # With a 10 ms budget the cpu arm is out: the gpu arm is the cheapest within it.
    assert CostPolicy({"cpu": 0.10, "cuda": 3.00}, 10).order([cpu, gpu], 8, clock.now)[0] is gpu


def test_policies_come_from_the_model_config() -> None:
    clock = Clock()
    arms = [arm(clock, "onnxruntime", 0.001)]
    assert isinstance(make_policy(mc.RoutingPolicy(), arms), LatencyPolicy)
    assert isinstance(
        make_policy(mc.RoutingPolicy(policy="fixed", fixed_arm="onnxruntime/cpu/fp32"), arms),
        FixedPolicy,
    )
    with pytest.raises(InvalidInput, match="nope"):
        make_policy(mc.RoutingPolicy(policy="fixed", fixed_arm="nope"), arms)
    with pytest.raises(InvalidInput, match="price_per_hour"):
        make_policy(mc.RoutingPolicy(policy="cost"), arms)
    with pytest.raises(InvalidInput, match="unknown routing policy"):
        make_policy(mc.RoutingPolicy(policy="vibes"), arms)


async def test_a_failed_batch_is_retried_once_on_the_next_best_arm() -> None:
    clock = Clock()
    a, b = arm(clock, "a", 0.001), arm(clock, "b", 0.002)
    router = Router("m", [a, b], LatencyPolicy(explore_fraction=0), InlineExecutor(), clock)
    await router.execute(x())
    await router.execute(x())
    assert isinstance(a.runtime, TimedRuntime)
    a.runtime.failing = True
    execution = await router.execute(x())
    np.testing.assert_array_equal(execution.outputs["y"], x()["x"] * 2)
    assert execution.arm is b
    assert a.failures == 1 and b.batches == 2


async def test_a_failing_arm_opens_its_circuit_and_is_probed_after_the_cool_down() -> None:
    clock = Clock()
    a, b = arm(clock, "a", 0.001), arm(clock, "b", 0.005)
    router = Router("m", [a, b], LatencyPolicy(explore_fraction=0), InlineExecutor(), clock)
    await router.execute(x())
    await router.execute(x())
    assert isinstance(a.runtime, TimedRuntime)
    a.runtime.failing = True
    for _ in range(3):
        await router.execute(x())
    assert a.circuit is Circuit.OPEN
    calls = a.runtime.calls
    for _ in range(5):
        await router.execute(x())
    assert a.runtime.calls == calls  # skipped while open
    a.runtime.failing = False
    clock.now += COOL_DOWN_S
    await router.execute(x())
    assert a.runtime.calls == calls + 1 and a.circuit is Circuit.CLOSED


async def test_when_every_arm_fails_the_batch_is_unavailable_with_the_reasons() -> None:
    clock = Clock()
    a, b = arm(clock, "a", 0.001), arm(clock, "b", 0.002)
    for r in (a.runtime, b.runtime):
        assert isinstance(r, TimedRuntime)
        r.failing = True
    router = Router("m", [a, b], LatencyPolicy(), InlineExecutor(), clock)
    with pytest.raises(Unavailable, match="every arm tried") as caught:
        await router.execute(x())
    assert "a/cpu/fp32" in str(caught.value) and "b/cpu/fp32" in str(caught.value)
    for _ in range(3):
        with pytest.raises((Unavailable, BackendFailed)):
            await router.execute(x())
    with pytest.raises(Unavailable, match="every arm is failing"):
        await router.execute(x())


async def test_describe_reports_share_latency_and_circuit() -> None:
    clock = Clock()
    a, b = arm(clock, "a", 0.001, 0.0001), arm(clock, "b", 0.004)
    router = Router("m", [a, b], LatencyPolicy(explore_fraction=0), InlineExecutor(), clock)
    for rows in (1, 8, 32, 8, 8):
        await router.execute(x(rows))
        await asyncio.sleep(0)
    report = {r.arm: r for r in router.describe()}
    assert report["a/cpu/fp32"].batches == 4 and report["b/cpu/fp32"].batches == 1
    assert report["a/cpu/fp32"].share == pytest.approx(0.8)
    assert report["a/cpu/fp32"].per_row_ms == pytest.approx(0.1, rel=0.05)
    assert report["a/cpu/fp32"].fixed_ms == pytest.approx(1.0, rel=0.05)
    assert report["a/cpu/fp32"].circuit == "closed"


async def test_waiting_pays_only_when_the_fixed_cost_is_worth_sharing() -> None:
    clock = Clock()
    memory_bound = arm(clock, "mlp", fixed_s=0.004, per_row_s=0.0003)
    compute_bound = arm(clock, "cnn", fixed_s=0.00002, per_row_s=0.0004)
    for a in (memory_bound, compute_bound):
        for rows in (1, 8, 32):
            a.latency.observe(rows, a.runtime.fixed_s + a.runtime.per_row_s * rows)  # type: ignore[attr-defined]
    assert Router("m", [memory_bound], LatencyPolicy(), InlineExecutor(), clock).waiting_pays()
    assert not Router("c", [compute_bound], LatencyPolicy(), InlineExecutor(), clock).waiting_pays()


async def test_waiting_pays_is_asked_again_once_a_batch_has_run() -> None:
    clock = Clock()
    a = arm(clock, "a", fixed_s=0.004, per_row_s=0.0003)
    for rows in (1, 8, 32):
        a.latency.observe(rows, 0.004 + 0.0003 * rows)
    router = Router("m", [a], LatencyPolicy(), InlineExecutor(), clock)
    assert router.waiting_pays()
    # The model becomes compute-bound (no fixed cost): the answer holds until a batch
    # has run (it is asked at every request's arrival), then follows the arm.
    assert isinstance(a.runtime, TimedRuntime)
    a.runtime.fixed_s, a.runtime.per_row_s = 0.0, 0.0005
    for rows in (1, 8, 32):
        a.latency.observe(rows, 0.0005 * rows)
        a.latency.observe(rows, 0.0005 * rows)
    assert router.waiting_pays()  # cached
    for rows in (1, 8, 32, 1, 8, 32):
        await router.execute(x(rows))
    assert not router.waiting_pays()


async def test_calls_measured_cheaper_than_a_thread_hop_run_on_the_loop() -> None:
    clock = Clock()
    fast = arm(clock, "a", 0.00005)  # 50 us a call
    executor = CountingExecutor()
    router = Router(
        "m", [fast], LatencyPolicy(), executor, clock, RunOptions(inline_below_s=0.0002)
    )
    for _ in range(INLINE_AFTER_SAMPLES):
        await router.execute(x(1))
    assert executor.submitted == INLINE_AFTER_SAMPLES  # measured first, on the threads
    for _ in range(5):
        execution = await router.execute(x(1))
    np.testing.assert_array_equal(execution.outputs["y"], x(1)["x"] * 2)
    assert executor.submitted == INLINE_AFTER_SAMPLES and router.inline_batches == 5
    assert fast.batches == INLINE_AFTER_SAMPLES + 5  # measured like any other call
    # One call stalls (a GC pause, say): the calls after it still run inline.
    assert isinstance(fast.runtime, TimedRuntime)
    fast.runtime.fixed_s = 0.005
    await router.execute(x(1))
    fast.runtime.fixed_s = 0.00005
    await router.execute(x(1))
    assert router.inline_batches == 7 and executor.submitted == INLINE_AFTER_SAMPLES
    # It gets slower for good: once every recent call is slow, calls go to the threads.
    fast.runtime.fixed_s = 0.005
    for _ in range(LEAST_OF):
        await router.execute(x(1))
    assert router.inline_batches == 7 + LEAST_OF
    await router.execute(x(1))
    assert router.inline_batches == 7 + LEAST_OF and executor.submitted == INLINE_AFTER_SAMPLES + 1


async def test_inline_execution_can_be_turned_off() -> None:
    clock = Clock()
    executor = CountingExecutor()
    router = Router(
        "m", [arm(clock, "a", 0.00001)], LatencyPolicy(), executor, clock, RunOptions(0.0)
    )
    for _ in range(INLINE_AFTER_SAMPLES + 5):
        await router.execute(x(1))
    assert router.inline_batches == 0 and executor.submitted == INLINE_AFTER_SAMPLES + 5


async def test_a_failing_inline_call_fails_over_like_a_threaded_one() -> None:
    clock = Clock()
    a, b = arm(clock, "a", 0.00001), arm(clock, "b", 0.00002)
    router = Router("m", [a, b], LatencyPolicy(explore_fraction=0), CountingExecutor(), clock)
    for _ in range(INLINE_AFTER_SAMPLES * 3):
        await router.execute(x(1))
    assert isinstance(a.runtime, TimedRuntime)
    inline = router.inline_batches
    assert inline > 0
    a.runtime.failing = True
    execution = await router.execute(x(1))
    assert execution.arm is b and a.failures == 1 and "failed on cue" in a.last_error
    # a's call failed inline; b, measured only a few times so far, ran on a thread.
    assert b.latency.samples <= INLINE_AFTER_SAMPLES
    assert router.inline_batches == inline + 1


class ValueSensitiveRuntime(TimedRuntime):
    """Fails on any batch holding a negative value (the request's fault), or on every
    call once `failing` is set (the runtime's fault)."""

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (inputs["x"] < 0).any():
            self.calls += 1
            raise ValueError("cannot handle negative values")
        return super().infer(inputs)


def canaried_arm(clock: Clock, backend: str, fixed_s: float) -> Arm:
    runtime = ValueSensitiveRuntime(clock, fixed_s)
    return Arm(backend, "cpu", "fp32", runtime, canary={"x": np.zeros((1, 4), np.float32)})


async def test_inputs_that_fail_every_arm_are_rejected_without_counting_against_the_arms() -> None:
    clock = Clock()
    a, b = canaried_arm(clock, "a", 0.001), canaried_arm(clock, "b", 0.002)
    router = Router("m", [a, b], LatencyPolicy(explore_fraction=0), InlineExecutor(), clock)
    for _ in range(5):  # more than FAILURES_TO_OPEN
        with pytest.raises(InputRejected, match="negative values"):
            await router.execute({"x": -np.ones((2, 4), np.float32)})
    assert a.failures == b.failures == 0
    assert a.circuit is Circuit.CLOSED and b.circuit is Circuit.CLOSED
    assert router.input_faults == 10  # each batch tried on both arms
    assert (await router.execute(x())).arm is a


async def test_an_arm_whose_canary_fails_too_is_counted_and_skipped() -> None:
    clock = Clock()
    a, b = canaried_arm(clock, "a", 0.001), canaried_arm(clock, "b", 0.002)
    router = Router("m", [a, b], LatencyPolicy(explore_fraction=0), InlineExecutor(), clock)
    assert isinstance(a.runtime, TimedRuntime)
    a.runtime.failing = True  # every call fails now, the canary's too
    for _ in range(3):
        assert (await router.execute(x())).arm is b
    assert a.failures == 3 and a.circuit is Circuit.OPEN
    assert router.input_faults == 0


async def test_a_hung_call_fails_over_and_opens_the_arm_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    clock = Clock()
    release = threading.Event()

    class Hanging(TimedRuntime):
        def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            release.wait(10)
            return super().infer(inputs)

    a = Arm("a", "cpu", "fp32", Hanging(clock, 0.001))
    b = arm(clock, "b", 0.002)
    a.latency.observe(1, 0.0001)  # a looks fastest, so it goes first
    with ThreadPoolExecutor(2) as pool:
        router = Router(
            "m", [a, b], FixedPolicy("a"), pool, clock, RunOptions(0.0, execution_timeout_s=0.2)
        )
        started = time.monotonic()
        execution = await router.execute(x())
        assert execution.arm is b and time.monotonic() - started < 2.0
        assert a.circuit is Circuit.OPEN and "took more than 0.2 s" in a.last_error
        release.set()
