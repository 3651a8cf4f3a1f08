"""What the batch queue reports: spans for queue wait, batch and backend; metrics.

Spans (when tracing is on): each request gets a "queue wait" child, from enqueue to
the start of its batch, and a "backend" child covering the runtime call that served
it; each batch gets one "batch" span linked to the server span of every request in
it, carrying backend, device, variant and size. With tracing off none of this runs.

The request path records one tuple per batch (records.BatchRecord): the exporter
makes the batch span and its requests' children from it. A request dropped from the
queue (timed out, cancelled) gets its failed queue-wait span at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from infergate.gateway.core.routing import Execution
from infergate.telemetry import spans
from infergate.telemetry.metrics import Metrics
from infergate.telemetry.records import BATCH, batch_failure
from infergate.telemetry.spans import Span
from infergate.telemetry.tracing import Tracing


class BatchTelemetry:
    def __init__(self, model: str, tracing: Tracing | None, metrics: Metrics | None) -> None:
        self.model = model
        self._tracing = tracing if tracing is not None and tracing.enabled else None
        self._metrics = metrics

    def enqueued(self) -> Span | None:
        """The server span of the request joining the queue (None: not traced)."""
        if self._tracing is None:
            return None
        return spans.current.get()  # None when this request is not sampled

    def dropped(self, request: Span | None, enqueued_ns: int, why: str) -> None:
        """A request left the queue without running (enqueued_ns: perf_counter_ns)."""
        if request is None:
            return
        waited_ns = time.perf_counter_ns() - enqueued_ns
        now_ns = time.time_ns()
        span = request.child("queue wait", {"infergate.model": self.model}, now_ns - waited_ns)
        span.set_error(why)
        span.end(now_ns)

    def batch_done(
        self,
        requests: Sequence[Span | None],
        enqueued_ns: Sequence[int],
        rows: int,
        started: tuple[int, int],
        execution: Execution | None,
        error: BaseException | None = None,
    ) -> None:
        """enqueued_ns: when each request joined the queue (perf_counter_ns);
        started: the batch's start, (perf_counter_ns, time_ns)."""
        started_ns, started_wall_ns = started
        if self._metrics is not None:
            self._metrics.observe_queue(
                self.model, [(started_ns - enqueued) / 1e9 for enqueued in enqueued_ns]
            )
            if execution is not None:
                self._metrics.observe_batch(
                    self.model, execution.arm.name, rows, execution.infer_ns / 1e9
                )
        if self._tracing is None:
            return
        # Queue entry times are perf_counter_ns; spans need wall-clock times.
        wall_offset_ns = started_wall_ns - started_ns
        queued = tuple(
            [
                (server.trace_id, server.span_id, server.trace_state, enqueued + wall_offset_ns)
                for server, enqueued in zip(requests, enqueued_ns, strict=True)
                if server is not None
            ]
        )
        if not queued:
            return
        arm, ran = "", None
        if execution is not None:
            arm = execution.arm.name
            ran = (execution.started_wall_ns, execution.started_wall_ns + execution.infer_ns)
        self._tracing.record(
            (
                BATCH,
                self.model,
                arm,
                rows,
                len(requests),
                started_wall_ns,
                time.time_ns(),
                queued,
                ran,
                None if error is None else batch_failure(error),
            )
        )
