"""Which arm runs each batch: the routing policies and the router that applies them.

A RoutingPolicy orders a model's usable arms for one batch: the first runs it, the
next takes over if it fails. Policies are chosen per model by ModelConfig.routing
and can be changed live. The router runs the batch, feeds the measured latency
back into the arm, handles failover and circuit breaking, and reports.

To add a policy: subclass RoutingPolicy, implement `order`, and add it to
`make_policy`.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from infergate.gateway.core.arms import Arm, DeviceLoad
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.arm_stats import ArmStats
from infergate.schema.errors import BackendFailed, InputRejected, InvalidInput, Unavailable, shown
from infergate.schema.tensors import Tensors

log = logging.getLogger(__name__)

DEFAULT_EXPLORE_FRACTION = 0.05
# An arm not run for this long is due a probe (within the exploration budget).
REPROBE_AFTER_S = 2.0
# A probe that finds its arm still this much slower than the best doubles the wait
# before its next probe, up to MAX_REPROBE_AFTER_S; one that finds it close resets
# the wait. Measured with 7 arms of mlp_large: a probe of an fp32 arm took 23-35 ms
# (its 100 MB of weights cold) against ~4 ms a batch for the int8 arm in use, and
# each of five such arms was probed every 2 s. A slow arm that turns fast is still
# noticed within a minute.
BACKOFF_SLOWER_BY = 1.5
MAX_REPROBE_AFTER_S = 64.0
# An arm takes over from the one in use on the same device only when it is this much
# faster both by prediction and by its fastest recent call (LatencyModel.least_s).
# Switching has a cost the latency model does not see: each arm has its own weights,
# and two that take turns keep evicting each other from the CPU's caches (mlp_large's
# int8 arms are ~25 MB each against a 32 MB L3). And the arm in use takes every stall
# of a busy machine (a GIL wait, a preemption) into its prediction while an idle arm
# keeps its clean one: by prediction alone, noise made the arms take turns.
SWITCH_MARGIN = 0.10
# This much faster than the arm in use's last SWITCH_AT_ONCE_CALLS calls (each of
# them), an arm takes over at once: a real change, not one stall.
SWITCH_AT_ONCE = 1.5
SWITCH_AT_ONCE_CALLS = 2
# The arms not in use are measured only by their probes, a call every few seconds,
# each one run cold (their weights out of the CPU's caches), so their predictions
# lag and run high. Two consequences, measured with cnn on three CPU arms:
# - when the arm in use slows, the arm that takes over is the one whose fastest
#   recent call is fastest (least_s), not the one whose cold probes happened to
#   predict least: by prediction the policy took tflite (0.48x) over OpenVINO (0.62x);
# - a probe that finds its arm this much faster than the arm in use's prediction is
#   confirmed by a second probe at once: two fast calls in a row outweigh the arm's
#   old samples (LatencyModel's change of regime), where one probe every few seconds
#   took ~3 s to win back the batches a start-up stall had handed to a slower arm.
CONFIRM_FASTER_BY = 1 + SWITCH_MARGIN
# Waiting for a batch pays unless the fixed cost per call is below this share of
# one row's cost (see Router.waiting_pays).
WAIT_PAYS_FIXED_SHARE = 0.1
# How often the router may log a change of preferred arm, per model.
LOG_INTERVAL_S = 10.0
# A batch whose arm ran one of its recent calls (scaled to the batch's rows) in at
# most this long runs on the event loop itself, not on a worker thread: handing a
# call to a thread and back costs about 100-150 us of CPU and two waits for the GIL,
# more than a small model's whole call. Only once the arm has this many measured
# batches: a new arm's first calls are its unknowns.
DEFAULT_INLINE_BELOW_S = 200e-6
INLINE_AFTER_SAMPLES = 8
# A runtime call on a worker thread that takes longer than this is taken for a hung
# runtime: the batch fails over and the arm's circuit opens at once. Generous, since
# a real batch of a big model on a busy CPU can take seconds; 0: no limit.
DEFAULT_EXECUTION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RunOptions:
    """How the router runs calls, for every model of a gateway (settings)."""

    # A call whose arm ran one of its recent calls this fast runs on the event loop.
    inline_below_s: float = DEFAULT_INLINE_BELOW_S
    # A threaded call running longer is a hang (see DEFAULT_EXECUTION_TIMEOUT_S).
    execution_timeout_s: float = DEFAULT_EXECUTION_TIMEOUT_S


DEFAULT_RUN_OPTIONS = RunOptions()


@dataclass(frozen=True)
class Execution:
    """One batch run: its outputs, the arm that ran it, and where the time went."""

    outputs: Tensors
    arm: Arm
    infer_ns: int  # in the runtime
    started_wall_ns: int  # time.time_ns() when the runtime started, for spans


class RoutingPolicy(abc.ABC):
    """Orders a model's arms for one batch; the first runs it, the rest are failover."""

    name: str = ""

    @abc.abstractmethod
    def order(self, arms: Sequence[Arm], rows: int, now: float) -> list[Arm]:
        """Arms (all usable now) in order of preference for a batch of `rows` rows."""

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name}


def by_expected_completion(arms: Sequence[Arm], rows: int, now: float) -> list[Arm]:
    return sorted(arms, key=lambda a: a.expected_completion_s(rows, now))


class LatencyPolicy(RoutingPolicy):
    """Least expected completion time: its device's backlog plus its predicted latency.

    Explores so that it notices change: an arm never measured goes first; an arm
    not run for its reprobe interval (REPROBE_AFTER_S, doubled after each probe that
    finds it still slow) is probed, but only while exploring stays within
    `explore_fraction` of all batches, counted both in batches and in predicted
    seconds: a probe of an arm 9x slower than the best costs 8 batches' worth of time.
    """

    name = "latency"

    def __init__(
        self,
        explore_fraction: float = DEFAULT_EXPLORE_FRACTION,
        reprobe_after_s: float = REPROBE_AFTER_S,
    ) -> None:
        self.explore_fraction = explore_fraction
        self.reprobe_after_s = reprobe_after_s
        self.batches = 0
        self.explored = 0
        # Predicted seconds of every batch on the best arm, and what probes added to them.
        self.spent_s = 0.0
        self.explored_s = 0.0
        # Each probed arm's current reprobe interval, and the probe not yet judged.
        self._reprobe_after_s: dict[Arm, float] = {}
        self._awaiting_verdict: dict[Arm, tuple[int, int]] = {}  # (batches, failures) at the probe
        self._incumbent: Arm | None = None  # the arm the last batch went to, probes aside
        self._confirm: Arm | None = None  # an arm whose probe found it faster: probe again
        self._confirming: Arm | None = None  # the arm of the confirmation probe under way
        self.switches = 0  # times another arm took over from the incumbent

    def order(self, arms: Sequence[Arm], rows: int, now: float) -> list[Arm]:
        self.batches += 1
        ranked = self._keep_incumbent(by_expected_completion(arms, rows, now), rows)
        if ranked[0].latency.samples:  # an unmeasured arm leads only by predicting 0 s
            self._incumbent = ranked[0]
        best_s = ranked[0].latency.predict_s(rows)
        self.spent_s += best_s
        self._judge_probes(ranked[0])
        probe = self._probe(ranked, rows, best_s, now)
        if probe is not None:
            self.explored += 1
            ranked.remove(probe)
            ranked.insert(0, probe)
        return ranked

    def _keep_incumbent(self, ranked: list[Arm], rows: int) -> list[Arm]:
        """The arm in use stays first unless the leader on its device is clearly faster
        (see SWITCH_MARGIN; on another device the backlogs differ and the ranking stands)."""
        incumbent, leader = self._incumbent, ranked[0]
        if incumbent is None or incumbent is leader or incumbent.load is not leader.load:
            return ranked
        if incumbent not in ranked or incumbent.latency.samples == 0:
            return ranked
        ours, theirs = incumbent.latency, leader.latency
        theirs_s = max(theirs.predict_s(rows), 1e-9)
        recent_ratio = ours.least_s(rows, of=SWITCH_AT_ONCE_CALLS) / theirs_s
        predicted_ratio = ours.predict_s(rows) / theirs_s
        least_ratio = ours.least_s(rows) / max(theirs.least_s(rows), 1e-9)
        if recent_ratio > SWITCH_AT_ONCE or min(predicted_ratio, least_ratio) > (1 + SWITCH_MARGIN):
            self.switches += 1
            # The successor on this device: the fastest when nothing is in the way
            # (see CONFIRM_FASTER_BY for why not by prediction).
            successor = min(
                (a for a in ranked if a is not incumbent and a.load is leader.load),
                key=lambda a: a.latency.least_s(rows) if a.latency.samples else float("inf"),
            )
            ranked.remove(successor)
            ranked.insert(0, successor)
            return ranked
        ranked.remove(incumbent)
        ranked.insert(0, incumbent)
        return ranked

    def _probe(self, ranked: list[Arm], rows: int, best_s: float, now: float) -> Arm | None:
        unmeasured = [a for a in ranked if a.latency.samples == 0]
        if unmeasured:
            return unmeasured[0]
        confirm, self._confirm = self._confirm, None
        if confirm is not None and confirm in ranked[1:]:
            # One batch right after a probe found the arm faster: no budget check (by
            # that probe it costs nothing), and never confirmed again in turn.
            self._awaiting_verdict[confirm] = (confirm.batches, confirm.failures)
            self._confirming = confirm
            return confirm
        budget = self.explore_fraction
        if len(ranked) < 2 or self.explored + 1 > budget * self.batches:
            return None
        stale = [
            a
            for a in ranked[1:]
            if now - a.last_used >= self._reprobe_after_s.get(a, self.reprobe_after_s)
        ]
        if not stale:
            return None
        probe = min(stale, key=lambda a: a.last_used)
        extra_s = max(0.0, probe.latency.predict_s(rows) - best_s)
        if self.explored_s + extra_s > budget * self.spent_s:
            return None
        self.explored_s += extra_s
        self._awaiting_verdict[probe] = (probe.batches, probe.failures)
        return probe

    def _judge_probes(self, best: Arm) -> None:
        """Back off from probed arms whose probe found them still slow (see BACKOFF_SLOWER_BY)."""
        for arm, before in list(self._awaiting_verdict.items()):
            if (arm.batches, arm.failures) == before:
                continue  # its probe has not run yet
            del self._awaiting_verdict[arm]
            confirming = self._confirming is arm
            if confirming:
                self._confirming = None
            last = arm.latency.last_sample()
            interval_s = self._reprobe_after_s.get(arm, self.reprobe_after_s)
            if arm is not best and last is not None:
                rows, seconds = last
                best_s = best.latency.predict_s(rows)
                if seconds >= BACKOFF_SLOWER_BY * best_s:
                    self._reprobe_after_s[arm] = min(MAX_REPROBE_AFTER_S, 2 * interval_s)
                    continue
                if seconds * CONFIRM_FASTER_BY < best_s and not confirming:
                    self._confirm = arm
            self._reprobe_after_s.pop(arm, None)

    def describe(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "explore_fraction": self.explore_fraction,
            "batches": self.batches,
            "explored": self.explored,
            "switches": self.switches,
        }


class FixedPolicy(RoutingPolicy):
    """One named arm; the others (fastest first) only when it fails or its circuit is open."""

    name = "fixed"

    def __init__(self, arm: str) -> None:
        self.arm = arm

    def order(self, arms: Sequence[Arm], rows: int, now: float) -> list[Arm]:
        ranked = by_expected_completion(arms, rows, now)
        return sorted(ranked, key=lambda a: not a.matches(self.arm))

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "arm": self.arm}


class RoundRobinPolicy(RoutingPolicy):
    name = "round_robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def order(self, arms: Sequence[Arm], rows: int, now: float) -> list[Arm]:
        start = next(self._turn) % len(arms)
        return [*arms[start:], *arms[:start]]


class CostPolicy(RoutingPolicy):
    """Least cost per 1000 inferences among arms within the latency budget.

    Cost comes from the price per hour of the arm's device kind and its predicted
    seconds per row at this batch size. Arms over budget, or on a device kind with
    no price, come after, fastest first.
    """

    name = "cost"

    def __init__(self, price_per_hour: Mapping[str, float], latency_budget_ms: float = 0) -> None:
        self.price_per_hour = dict(price_per_hour)
        self.latency_budget_ms = latency_budget_ms

    def cost_per_1000(self, arm: Arm, rows: int) -> float | None:
        price = self.price_per_hour.get(arm.device_kind)
        if price is None:
            return None
        return price / 3600 * arm.latency.predict_s(rows) / max(1, rows) * 1000

    def order(self, arms: Sequence[Arm], rows: int, now: float) -> list[Arm]:
        budget_s = self.latency_budget_ms / 1000
        priced: list[tuple[float, Arm]] = []
        others: list[Arm] = []
        for arm in arms:
            cost = self.cost_per_1000(arm, rows)
            within = not budget_s or arm.expected_completion_s(rows, now) <= budget_s
            if cost is not None and within:
                priced.append((cost, arm))
            else:
                others.append(arm)
        priced.sort(key=lambda pair: pair[0])
        return [a for _, a in priced] + by_expected_completion(others, rows, now)

    def describe(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "price_per_hour": self.price_per_hour,
            "latency_budget_ms": self.latency_budget_ms,
        }


def make_policy(settings: mc.RoutingPolicy, arms: Sequence[Arm]) -> RoutingPolicy:
    """The policy a ModelConfig asks for; InvalidInput when it cannot apply."""
    name = settings.policy or "latency"
    if name == "latency":
        return LatencyPolicy(settings.explore_fraction or DEFAULT_EXPLORE_FRACTION)
    if name == "fixed":
        if not any(a.matches(settings.fixed_arm) for a in arms):
            raise InvalidInput(
                f"routing policy 'fixed' names arm {shown(settings.fixed_arm)}, but the arms are "
                f"{[a.name for a in arms]}"
            )
        return FixedPolicy(settings.fixed_arm)
    if name == "round_robin":
        return RoundRobinPolicy()
    if name == "cost":
        if not settings.price_per_hour:
            raise InvalidInput("routing policy 'cost' needs price_per_hour for the device kinds")
        return CostPolicy(settings.price_per_hour, settings.latency_budget_ms)
    raise InvalidInput(
        f"unknown routing policy {shown(name)}; use latency, fixed, round_robin or cost"
    )


def share_device_load(arms: Sequence[Arm]) -> None:
    """Give arms on the same device one DeviceLoad (the first one's)."""
    by_device: dict[str, DeviceLoad] = {}
    for arm in arms:
        arm.load = by_device.setdefault(arm.device, arm.load)


class Router:
    """Runs a model's batches on its arms under a policy."""

    def __init__(
        self,
        model: str,
        arms: Sequence[Arm],
        policy: RoutingPolicy,
        executor: Executor,
        clock: Callable[[], float] = time.monotonic,
        options: RunOptions = DEFAULT_RUN_OPTIONS,
    ) -> None:
        if not arms:
            raise ValueError("a router needs at least one arm")
        self.model = model
        self.arms = list(arms)
        share_device_load(self.arms)
        self.policy = policy
        self._executor = executor
        self._clock = clock
        self.inline_below_s = options.inline_below_s  # 0: every call on a worker thread
        self.execution_timeout_s = options.execution_timeout_s
        self.inline_batches = 0
        # Failures the runtime raised for the inputs' values, not the arm's health.
        self.input_faults = 0
        self._batch_ids = itertools.count()
        self._preferred = ""
        self._logged_at = float("-inf")
        # waiting_pays() as last computed; None: an arm's record changed since. The
        # batch queue asks at every request's arrival, the answer moves per batch.
        self._waiting_pays: bool | None = None

    def pick_arm(self, rows: int = 1) -> str | None:
        """The arm the policy would run a batch of `rows` on now (None: none usable):
        a new sequence is pinned to it (infergate.gateway.core.sequences)."""
        now = self._clock()
        usable = [a for a in self.arms if a.usable(now)]
        return self.policy.order(usable, rows, now)[0].name if usable else None

    async def execute(self, inputs: Tensors, pin: str | None = None) -> Execution:
        """Run one batch on the best arm, failing over once to the next.

        With `pin` (an arm's name) the batch runs on that arm alone, never failing
        over: its requests belong to sequences whose state must not change arms.

        Who is to blame for a failure decides what follows. After a call fails, the
        arm runs its canary (inputs it is known to run: its warm-up); if that
        succeeds, the arm is healthy and these inputs' values made the runtime fail
        (an input-dependent reshape, invalid UTF-8 in a string tensor...): that
        never counts against the arm, so no client can open a circuit for everyone
        by sending bad values. Only a failing canary (or a hang) counts. When every
        arm tried rejects the inputs, InputRejected tells the caller (the batch
        queue, which then finds the request at fault among the batch's).
        """
        rows = _rows(inputs)
        now = self._clock()
        usable = [a for a in self.arms if a.usable(now) and (pin is None or a.name == pin)]
        if not usable and pin is not None:
            raise Unavailable(
                f"model '{self.model}': arm {pin}, which this request's sequence runs on, is "
                "failing and a sequence does not change arms; start the sequence again"
            )
        if not usable:
            raise Unavailable(
                f"model '{self.model}': every arm is failing: "
                + "; ".join(f"{a.name}: {a.last_error}" for a in self.arms)
            )
        order = self.policy.order(usable, rows, now)
        self._note_preference(order[0], now)
        arm_errors: list[str] = []
        rejections: list[str] = []
        # Retried once, on the next-best arm.
        for arm in order[:2]:
            try:
                return await self._run(arm, inputs, rows)
            except ExecutionHung as exc:
                arm.record_hang(str(exc), self._clock())
                self._waiting_pays = None
                arm_errors.append(f"{arm.name}: {exc}")
                log.error("model %s: arm %s: %s", self.model, arm.name, exc)
            except BackendFailed as exc:
                if await self._healthy(arm):
                    self.input_faults += 1
                    rejections.append(f"{arm.name}: {exc}")
                    continue
                arm.record_failure(str(exc), self._clock())
                self._waiting_pays = None
                arm_errors.append(f"{arm.name}: {exc}")
                log.warning("model %s: arm %s failed: %s", self.model, arm.name, exc)
        if rejections:
            raise InputRejected(
                f"model '{self.model}': the runtime rejected the request's input values "
                f"(it runs other inputs): {'; '.join(rejections)}"
            )
        if len(arm_errors) == 1:
            raise BackendFailed(arm_errors[0])
        raise Unavailable(
            f"model '{self.model}': the batch failed on every arm tried: " + "; ".join(arm_errors)
        )

    async def _healthy(self, arm: Arm) -> bool:
        """Whether the arm still runs its canary; an arm without one counts as failing."""
        canary = arm.canary
        if canary is None:
            return False
        try:
            await self._call(arm, canary, run_inline=False)
        except Exception as exc:
            log.warning("model %s: arm %s failed its canary: %s", self.model, arm.name, exc)
            return False
        return True

    async def _run(self, arm: Arm, inputs: Tensors, rows: int) -> Execution:
        batch_id = next(self._batch_ids)
        arm.load.running[batch_id] = (self._clock(), arm.latency.predict_s(rows))
        inline = self._runs_inline(arm, rows)
        if inline:
            self.inline_batches += 1
        try:
            outputs, wall_ns, seconds = await self._call(arm, inputs, inline)
        except ExecutionHung:
            raise
        except Exception as exc:
            raise BackendFailed(f"{type(exc).__name__}: {_shown(str(exc))}") from exc
        finally:
            arm.load.running.pop(batch_id, None)
            self._waiting_pays = None
        arm.record_success(rows, seconds, self._clock())
        return Execution(outputs, arm, int(seconds * 1e9), wall_ns)

    async def _call(
        self, arm: Arm, inputs: Tensors, run_inline: bool
    ) -> tuple[Tensors, int, float]:
        """One runtime call: (outputs, wall-clock start ns, seconds)."""

        def run() -> tuple[Tensors, int, float]:
            wall_ns = time.time_ns()
            start = self._clock()
            outputs = arm.runtime.infer(inputs)
            return outputs, wall_ns, self._clock() - start

        if run_inline:
            return run()
        future = asyncio.get_running_loop().run_in_executor(self._executor, run)
        if not self.execution_timeout_s:
            return await future
        try:
            # shield: on a timeout the call goes on in its thread (threads cannot be
            # stopped); what it returns then is dropped.
            return await asyncio.wait_for(asyncio.shield(future), self.execution_timeout_s)
        except TimeoutError:
            future.add_done_callback(_retrieve)
            raise ExecutionHung(
                f"a runtime call took more than {self.execution_timeout_s:g} s "
                "(--execution-timeout-s); taken for hung, its worker thread is lost "
                "until it returns"
            ) from None

    def _runs_inline(self, arm: Arm, rows: int) -> bool:
        """Whether this call is measured to be cheaper than a thread hop.

        Judged by the fastest of the arm's recent calls (LatencyModel.least_s), not
        the prediction: a call run on a worker thread is measured with the wait for
        the GIL to come back, often milliseconds on a busy event loop, and one
        garbage-collector pause in an inline call would raise the prediction past
        the limit. Either would keep calls on the threads that belong on the loop.
        A model that is really slower now makes all its recent calls slow.
        """
        latency = arm.latency
        return (
            latency.samples >= INLINE_AFTER_SAMPLES and latency.least_s(rows) <= self.inline_below_s
        )

    def waiting_pays(self) -> bool:
        """Whether batching saves time on the arm likely to run the next batch.

        A batch of n rows costs fixed + n * per_row; stacking n requests saves
        (n - 1) * fixed. Only when the fixed part is well below one row's cost (a
        tenth: profiles of tiny models are noisy) is waiting for company sure to
        cost the waiting request more than the batch can win back.
        """
        if self._waiting_pays is not None:
            return self._waiting_pays
        now = self._clock()
        usable = [a for a in self.arms if a.usable(now)] or self.arms
        best = min(usable, key=lambda a: a.latency.predict_s(1))
        fit = best.latency.fit
        pays = fit.samples == 0 or fit.fixed_s >= WAIT_PAYS_FIXED_SHARE * fit.per_row_s
        self._waiting_pays = pays
        return pays

    def _note_preference(self, arm: Arm, now: float) -> None:
        if arm.name == self._preferred or now - self._logged_at < LOG_INTERVAL_S:
            return
        if self._preferred:
            log.info(
                "model %s: now prefers arm %s (%s)",
                self.model,
                arm.name,
                ", ".join(f"{a.name} {a.latency.predict_s(1) * 1000:.2f} ms@1" for a in self.arms),
            )
        self._preferred = arm.name
        self._logged_at = now

    def describe(self) -> list[ArmStats]:
        """Per arm: share of batches, latency model, percentiles, failures, circuit."""
        total = sum(a.batches for a in self.arms) or 1
        return [
            ArmStats(
                arm=arm.name,
                backend=arm.backend,
                device=arm.device,
                variant=arm.variant,
                batches=arm.batches,
                share=arm.batches / total,
                rows=arm.rows,
                mean_batch_ms=arm.busy_s / arm.batches * 1000 if arm.batches else 0.0,
                fixed_ms=arm.latency.fit.fixed_s * 1000,
                per_row_ms=arm.latency.fit.per_row_s * 1000,
                p50_ms=arm.latency.percentile_ms(50),
                p95_ms=arm.latency.percentile_ms(95),
                failures=arm.failures,
                circuit=arm.circuit.value,
                last_error=arm.last_error,
            )
            for arm in self.arms
        ]


class ExecutionHung(BackendFailed):
    """A runtime call ran past the execution timeout."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Collect the outcome of a call nobody waits for any more."""
    if not future.cancelled():
        future.exception()


def _shown(message: str, limit: int = 500) -> str:
    """A runtime's message, bounded: some echo whole tensors."""
    return message if len(message) <= limit else message[:limit] + f"... ({len(message)} chars)"


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1
