"""What the batch queue reports: spans for queue wait, batch and backend; metrics.

Spans (when tracing is on): each request gets a "queue wait" child, from enqueue to
the start of its batch, and a "backend" child covering the runtime call that served
it; each batch gets one "batch" span linked to the server span of every request in
it, carrying backend, device, variant and size. With tracing off none of this runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from infergate.gateway.core.routing import Execution
from infergate.telemetry import spans
from infergate.telemetry.metrics import Metrics
from infergate.telemetry.spans import Span
from infergate.telemetry.tracing import Tracing


@dataclass(frozen=True)
class RequestTrace:
    server_span: Span  # the request's server span, parent of its children
    queue_span: Span


class BatchTelemetry:
    def __init__(self, model: str, tracing: Tracing | None, metrics: Metrics | None) -> None:
        self.model = model
        self._tracing = tracing if tracing is not None and tracing.enabled else None
        self._metrics = metrics
        self.tracing = self._tracing is not None

    def enqueued(self) -> RequestTrace | None:
        if self._tracing is None:
            return None
        server = spans.current.get()
        if server is None:  # this request is not sampled
            return None
        return RequestTrace(server, server.child("queue wait", {"infergate.model": self.model}))

    def left_queue(self, request: RequestTrace | None, why: str = "") -> None:
        """The request's wait is over: its batch starts, or it was dropped (why)."""
        if request is None:
            return
        if why:
            request.queue_span.set_error(why)
        request.queue_span.end()

    def batch_done(
        self,
        requests: Sequence[RequestTrace | None],
        queue_s: Sequence[float],
        rows: int,
        started_wall_ns: int,
        execution: Execution | None,
        error: BaseException | None = None,
    ) -> None:
        if self._metrics is not None:
            self._metrics.observe_queue(self.model, queue_s)
            if execution is not None:
                self._metrics.observe_batch(
                    self.model, execution.arm.name, rows, execution.infer_ns / 1e9
                )
        traced = [r for r in requests if r is not None]
        if self._tracing is None or not traced:
            return
        attributes: dict[str, str | bool | int | float] = {
            "infergate.model": self.model,
            "infergate.batch.rows": rows,
            "infergate.batch.requests": len(requests),
        }
        if execution is not None:
            arm = execution.arm
            attributes.update(
                {
                    "infergate.backend": arm.backend,
                    "infergate.device": arm.device,
                    "infergate.variant": arm.variant,
                    "infergate.arm": arm.name,
                }
            )
        batch = self._tracing.start_root("batch", attributes, started_wall_ns)
        if batch is None:
            return
        batch.links = [(r.server_span.trace_id, r.server_span.span_id) for r in traced]
        if error is not None:
            batch.set_error(str(error), error)
        if execution is not None:
            end_ns = execution.started_wall_ns + execution.infer_ns
            # One attribute only: the linked batch span carries the rest.
            arm_name = execution.arm.name
            for request in traced:
                backend = request.server_span.child(
                    "backend", {"infergate.arm": arm_name}, execution.started_wall_ns
                )
                backend.end(end_ns)
        batch.end(time.time_ns())
