"""Per-model dynamic batching with Triton's semantics.

Requests wait in one FIFO queue per model version. The scheduler forms a batch
from the oldest request and the requests after it whose non-batch dimensions match
(they can be stacked), counting rows, not requests, and sends it:

- at once when it reaches max_batch_size rows, or exactly a preferred size;
- otherwise once the oldest request has waited max_queue_delay, unless the model's
  measured latency says waiting does not pay (then at once);
- and only when an execution slot is free: at most `max_inflight` batches of a model
  run at once, so the runtime is never oversubscribed and, under load, requests
  accumulate into bigger batches while the slots are busy.

A full queue (max_queue_size requests) rejects at once. A request whose deadline
passes, or whose caller goes away, while it waits is dropped before it runs. Outputs
are split back to each request by its row range, after checking the runtime
returned one row per input row.

With batching off, the same queue runs each request alone, keeping the in-flight
bound, deadlines and statistics identical.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from infergate.gateway.core.batch_telemetry import BatchTelemetry
from infergate.gateway.core.routing import Execution
from infergate.gateway.core.stats import ModelStats
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import (
    BackendFailed,
    DeadlineExceeded,
    GatewayError,
    InputRejected,
    QueueFull,
    Unavailable,
)
from infergate.schema.tensors import Tensors
from infergate.telemetry.spans import Span

log = logging.getLogger(__name__)

# Runs one stacked batch (the model's router): run(inputs), or run(inputs, pin=arm)
# for a batch that must run on the arm its requests' sequences are pinned to.
RunBatch = Callable[..., Awaitable[Execution]]


# Triton leaves max_queue_delay_microseconds unbounded, but a lone request waits out
# the whole delay whenever its model's latency says waiting pays: a delay of hours is
# a slip of the keyboard that hangs every quiet caller. 10 s is far above any delay
# that trades latency for bigger batches (those are micro- to milliseconds).
MAX_QUEUE_DELAY_US = 10_000_000


def queue_delay_problem(config: mc.ModelConfig) -> str | None:
    """Why the config's queue delay cannot serve, or None when it can."""
    delays_us = {
        "dynamic_batching": config.dynamic_batching.max_queue_delay_microseconds,
        "sequence_batching.direct": config.sequence_batching.direct.max_queue_delay_microseconds,
        "sequence_batching.oldest": config.sequence_batching.oldest.max_queue_delay_microseconds,
    }
    for block, delay_us in delays_us.items():
        if delay_us > MAX_QUEUE_DELAY_US:
            return (
                f"{block}.max_queue_delay_microseconds is {delay_us}, above the limit of "
                f"{MAX_QUEUE_DELAY_US} (10 s): a lone request would wait that long for company"
            )
    return None


@dataclass(frozen=True)
class BatchPolicy:
    """How a model's requests are grouped; built from its ModelConfig."""

    enabled: bool = False
    max_batch_size: int = 0  # rows; 0: the model does not batch
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 0  # requests; 0: unbounded
    default_timeout_s: float = 0.0  # 0: none
    allow_timeout_override: bool = False
    max_inflight: int = 2


@dataclass(eq=False)
class _Pending:
    inputs: Tensors
    rows: int
    group: tuple[object, ...]  # requests stack only within one group
    enqueued_ns: int
    # loop.time() after which it must not start; None: no limit.
    deadline: float | None
    future: asyncio.Future[Tensors] = field(repr=False)
    started: bool = False
    trace: Span | None = field(default=None, repr=False)  # its server span, if traced
    pin: str | None = None  # the arm it must run on (a sequence's), if any


def policy_from_config(config: mc.ModelConfig, max_inflight: int) -> BatchPolicy:
    """Triton's dynamic_batching block; its absence turns batching off.

    A sequence model (sequence_batching) batches too, requests of different
    sequences together: its strategy's max_queue_delay_microseconds (and, for
    `oldest`, preferred_batch_size) apply as dynamic batching's would.
    """
    batching = config.dynamic_batching
    queue = batching.default_queue_policy
    delay_us = batching.max_queue_delay_microseconds
    preferred_sizes: list[int] = list(batching.preferred_batch_size)
    enabled = config.HasField("dynamic_batching")
    if config.HasField("sequence_batching"):
        sequence = config.sequence_batching
        strategy = sequence.WhichOneof("strategy_choice")
        enabled = True
        delay_us = (
            sequence.oldest if strategy == "oldest" else sequence.direct
        ).max_queue_delay_microseconds
        preferred_sizes = list(sequence.oldest.preferred_batch_size)
    enabled = enabled and config.max_batch_size > 0
    preferred = tuple(sorted(s for s in preferred_sizes if 0 < s <= config.max_batch_size))
    return BatchPolicy(
        enabled=enabled,
        max_batch_size=max(0, config.max_batch_size),
        preferred_batch_sizes=preferred,
        max_queue_delay_s=delay_us / 1e6,
        max_queue_size=queue.max_queue_size,
        default_timeout_s=queue.default_timeout_microseconds / 1e6,
        allow_timeout_override=queue.allow_timeout_override,
        max_inflight=max_inflight,
    )


class BatchQueue:
    """One model version's queue and its batches in flight; use submit(), then aclose()."""

    def __init__(
        self,
        name: str,
        policy: BatchPolicy,
        execute: RunBatch,
        stats: ModelStats,
        telemetry: BatchTelemetry | None = None,
        waiting_pays: Callable[[], bool] = lambda: True,
    ) -> None:
        self.name = name
        self.policy = policy
        self._execute = execute
        self._stats = stats
        self._telemetry = telemetry or BatchTelemetry(name, None, None)
        # Whether holding a request back for company can pay: not when the model's
        # fixed cost per call is small next to its per-row cost (a compute-bound
        # model computes a batch of 8 about as fast as 8 single rows).
        self._waiting_pays = waiting_pays
        self._queue: deque[_Pending] = deque()
        self._loop = asyncio.get_running_loop()
        self._executing = 0  # batches holding an execution slot
        self._running: set[asyncio.Task[None]] = set()
        self._dispatch_soon: asyncio.Handle | None = None
        # The oldest request's delay: the wake-up and the loop time it is set for.
        # uvloop hands back a plain Handle, without when(), for a time already past.
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        self._closing = False

    # ---- public ------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return len(self._queue)

    @property
    def inflight(self) -> int:
        return len(self._running)

    def update_policy(self, policy: BatchPolicy) -> None:
        """Change batching live; takes effect from the next batch formed."""
        self.policy = policy
        self._kick()

    def check_room(self) -> None:
        """Raise what submit() would raise now for want of room (queue full, unloading)."""
        if self._closing:
            raise Unavailable(f"model '{self.name}' is being unloaded")
        limit = self.policy.max_queue_size
        if limit and len(self._queue) >= limit:
            raise QueueFull(
                f"model '{self.name}' has {len(self._queue)} requests queued, its "
                f"max_queue_size; retry later"
            )

    async def submit(
        self,
        inputs: Tensors,
        rows: int,
        deadline_s: float | None = None,
        requested_timeout_s: float | None = None,
        pin: str | None = None,
    ) -> Tensors:
        """Queue a request and wait for its outputs (this request's rows only).

        deadline_s is the caller's remaining time (its gRPC deadline). The model's
        default queue timeout applies too; a request may shorten it (Triton's
        "timeout" parameter) when the model allows timeout overrides. A request with
        a `pin` (an arm's name) runs on that arm, batched only with requests pinned
        to it too.
        """
        self.check_room()
        policy = self.policy
        # The queue's own loop: asyncio.get_running_loop() makes a getpid() system
        # call each time (Python 3.11), on every request.
        loop = self._loop
        now = loop.time()
        queue_s = _queue_timeout(requested_timeout_s, policy)
        limits = [t for t in (deadline_s, queue_s) if t is not None]
        item = _Pending(
            inputs=inputs,
            rows=rows,
            group=(pin, *_group_key(inputs)),
            enqueued_ns=time.perf_counter_ns(),
            deadline=now + min(limits) if limits else None,
            future=loop.create_future(),
            trace=self._telemetry.enqueued(),
            pin=pin,
        )
        self._queue.append(item)
        if self._executing < self._max_inflight():
            self._kick()  # with every slot busy, the batch's end dispatches instead
        try:
            if item.deadline is None:
                return await item.future
            try:
                return await asyncio.wait_for(asyncio.shield(item.future), min(limits))
            except TimeoutError:
                if not item.started or deadline_s is None:
                    # Still queued: it will never run. Already running: the queue
                    # timeout no longer applies and the caller has no deadline.
                    if not item.started:
                        raise
                    return await item.future
            # Running when the queue timeout passed: only the caller's deadline is left.
            remaining = now + deadline_s - loop.time()
            return await asyncio.wait_for(asyncio.shield(item.future), max(0.0, remaining))
        except TimeoutError:
            item.future.cancel()  # if still queued, the scheduler drops it
            if not item.started:
                self._telemetry.dropped(item.trace, item.enqueued_ns, "deadline exceeded")
            raise DeadlineExceeded(
                f"model '{self.name}': the request's time ran out before it could be answered "
                f"(deadline {_ms(deadline_s)}, queue timeout {_ms(queue_s)})"
            ) from None
        except asyncio.CancelledError:
            item.future.cancel()  # the caller went away: never run it
            if not item.started:
                self._telemetry.dropped(item.trace, item.enqueued_ns, "cancelled")
            raise

    async def aclose(self, drain: bool = True) -> None:
        """Stop taking requests; finish (drain) or fail what is queued; stop the tasks."""
        self._closing = True
        if drain:
            while self._queue or self._running:
                self._dispatch()
                await asyncio.sleep(0.001)
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(Unavailable(f"model '{self.name}' was unloaded"))
        self._queue.clear()
        for handle in (self._timer, self._dispatch_soon):
            if handle is not None:
                handle.cancel()
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # ---- scheduling ---------------------------------------------------------------
    #
    # No scheduler task: batches are dispatched on events. A request arriving with a
    # slot free dispatches once per loop iteration (so a burst that arrives together
    # is seen together); a batch leaving its slot dispatches at once, before its own
    # requests are answered, so the runtime starts on the next batch while the event
    # loop encodes and sends this one's responses (answering 16 requests first left
    # the runtime idle for about 3 ms of every 15 ms mlp_large batch); a timer
    # dispatches when the oldest request's delay is up.

    def _max_inflight(self) -> int:
        return max(1, self.policy.max_inflight)

    def _kick(self) -> None:
        """Dispatch on the next loop iteration (once, however many ask)."""
        if self._dispatch_soon is None:
            self._dispatch_soon = self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Start every batch that should go now, as far as the slots allow."""
        if self._dispatch_soon is not None:
            self._dispatch_soon.cancel()
            self._dispatch_soon = None
        while self._queue and self._executing < self._max_inflight():
            now = self._loop.time()
            self._drop_finished(now)
            if not self._queue:
                return
            batch, wait_s = self._form_batch(now)
            if batch is None:
                self._wake_at(now + wait_s)
                return
            for item in batch:
                self._queue.remove(item)
            self._executing += 1
            # A fresh context: a batch serves many requests and must not run inside
            # the one whose arrival happened to dispatch it (its span, say).
            task = self._loop.create_task(self._run(batch), context=contextvars.Context())
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _wake_at(self, when: float) -> None:
        if self._timer is not None:
            if self._timer_at <= when:
                return  # an earlier wake-up is already set
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _release_slot(self) -> None:
        self._executing -= 1
        self._dispatch()

    def _drop_finished(self, now: float) -> None:
        """Forget cancelled requests; fail those whose deadline passed in the queue."""
        if not self._queue:
            return
        kept: deque[_Pending] = deque()
        for item in self._queue:
            if item.future.done():
                continue
            if item.deadline is not None and now >= item.deadline:
                item.future.set_exception(
                    DeadlineExceeded(f"model '{self.name}': the request timed out in the queue")
                )
                self._telemetry.dropped(item.trace, item.enqueued_ns, "timed out in the queue")
                continue
            kept.append(item)
        self._queue = kept

    def _form_batch(self, now: float) -> tuple[list[_Pending] | None, float]:
        """The batch to send now (None: wait that many seconds first)."""
        policy = self.policy
        oldest = self._queue[0]
        if not policy.enabled or policy.max_batch_size <= 0:
            return [oldest], 0.0
        batch: list[_Pending] = []
        rows = 0
        best_preferred: int | None = None
        for item in self._queue:
            if item.group != oldest.group:
                continue
            if rows + item.rows > policy.max_batch_size:
                break
            batch.append(item)
            rows += item.rows
            if rows in policy.preferred_batch_sizes:
                best_preferred = len(batch)
        if rows >= policy.max_batch_size:
            return batch, 0.0
        if best_preferred is not None:
            return batch[:best_preferred], 0.0
        if not self._waiting_pays():
            return batch, 0.0
        waited_s = (time.perf_counter_ns() - oldest.enqueued_ns) / 1e9
        remaining_s = policy.max_queue_delay_s - waited_s
        if remaining_s <= 0:
            return batch, 0.0
        return None, remaining_s

    async def _run(self, batch: list[_Pending]) -> None:
        """Run one batch in its slot; the slot is freed as soon as the runtime is done."""
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                try:
                    self._release_slot()
                except Exception:  # a scheduling bug must not cost this batch its answers
                    log.exception("model %s: starting the next batch failed", self.name)

        try:
            await self._run_batch(batch, release)
        finally:
            release()

    async def _run_batch(self, batch: list[_Pending], release: Callable[[], None]) -> None:
        # The last look before paying for compute: callers that left are dropped.
        batch = [item for item in batch if not item.future.done()]
        if not batch:
            return
        started = time.perf_counter_ns()
        for item in batch:
            item.started = True
            self._stats.queue.add(started - item.enqueued_ns)
        if await self._run_group(batch, release) is not None:
            await self._isolate(batch)  # in this batch's slot: isolating costs calls

    async def _run_group(
        self, group: list[_Pending], release: Callable[[], None]
    ) -> InputRejected | None:
        """Run `group` as one runtime call and answer its requests.

        Returns the rejection instead when the runtime refused the group's input
        values and the group has several requests, so that the caller can find the
        one at fault; the slot is then still held (`release` not called).
        """
        started = time.perf_counter_ns()
        times = (started, time.time_ns())  # perf_counter_ns, time_ns
        rows = sum(item.rows for item in group)
        stacked = _stack(group)
        input_ns = time.perf_counter_ns() - started
        traces = [item.trace for item in group]
        enqueued = [item.enqueued_ns for item in group]
        pin = group[0].pin
        try:
            execution = await (
                self._execute(stacked) if pin is None else self._execute(stacked, pin=pin)
            )
        except InputRejected as exc:
            self._telemetry.batch_done(traces, enqueued, rows, times, None, exc)
            if len(group) > 1:
                return exc
            release()
            self._fail(group, exc)
            return None
        except Exception as exc:
            release()
            error = (
                exc
                if isinstance(exc, GatewayError)
                else BackendFailed(f"model '{self.name}': {type(exc).__name__}: {exc}")
            )
            self._fail(group, error)
            self._telemetry.batch_done(traces, enqueued, rows, times, None, exc)
            return None
        release()  # the next batch starts now, while this one is answered
        split_started = time.perf_counter_ns()
        try:
            parts = _split(
                execution.outputs,
                [item.rows for item in group],
                self.name,
                batches=self.policy.max_batch_size > 0,
            )
        except GatewayError as exc:
            self._fail(group, exc)
            self._telemetry.batch_done(traces, enqueued, rows, times, None, exc)
            return None
        for item, part in zip(group, parts, strict=True):
            if not item.future.done():
                item.future.set_result(part)
        self._stats.record_execution(
            rows, len(group), input_ns, execution.infer_ns, time.perf_counter_ns() - split_started
        )
        self._telemetry.batch_done(traces, enqueued, rows, times, execution)
        return None

    async def _isolate(self, group: list[_Pending]) -> None:
        """Answer a rejected batch: run its halves apart, recursively, so that only the
        requests whose values the runtime refuses fail (log2 of the batch's requests
        calls deep per bad request); their batch-mates get their answers."""
        middle = len(group) // 2
        for part in (group[:middle], group[middle:]):
            part = [item for item in part if not item.future.done()]
            if part and await self._run_group(part, _keep_slot) is not None:
                await self._isolate(part)

    @staticmethod
    def _fail(batch: list[_Pending], error: GatewayError) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)


def _keep_slot() -> None:
    """The release of a call made inside a slot someone else frees."""


def _stack(group: list[_Pending]) -> Tensors:
    if len(group) == 1:
        return group[0].inputs
    names = group[0].inputs.keys()
    return {n: np.concatenate([item.inputs[n] for item in group]) for n in names}


def _split(outputs: Tensors, row_counts: list[int], name: str, batches: bool) -> list[Tensors]:
    """Each request's rows of the outputs; for a batching model, every output must have
    one row per input row, also for a call that served one request (a runtime that
    returns fewer would otherwise answer a 3-row request with 1 row, unnoticed)."""
    total = sum(row_counts)
    if batches:
        for output_name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != total:
                raise BackendFailed(
                    f"model '{name}': output '{output_name}' has shape {list(array.shape)}, "
                    f"which does not split into the call's {total} input rows (a batching "
                    "model returns one output row per input row)"
                )
    if len(row_counts) == 1:
        return [outputs]
    bounds = np.cumsum([0, *row_counts])
    return [
        {n: a[bounds[i] : bounds[i + 1]] for n, a in outputs.items()}
        for i in range(len(row_counts))
    ]


def _group_key(inputs: Tensors) -> tuple[object, ...]:
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))


def _queue_timeout(requested_s: float | None, policy: BatchPolicy) -> float | None:
    """The model's queue timeout, shortened by the request's own when allowed."""
    queue_s = policy.default_timeout_s or None
    if requested_s and policy.allow_timeout_override:
        queue_s = requested_s if queue_s is None else min(requested_s, queue_s)
    return queue_s


def _ms(seconds: float | None) -> str:
    return "none" if seconds is None else f"{seconds * 1000:.1f} ms"
