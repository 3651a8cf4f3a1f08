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

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NoOpTracer, Status, StatusCode

from infergate.gateway.core.routing import Execution
from infergate.telemetry.metrics import Metrics


@dataclass(frozen=True)
class RequestTrace:
    context: otel_context.Context  # the request's context: its server span is current
    span_context: trace.SpanContext  # the server span, for the batch's links
    queue_span: trace.Span


class BatchTelemetry:
    def __init__(self, model: str, tracer: trace.Tracer | None, metrics: Metrics | None) -> None:
        self.model = model
        self._tracer = tracer
        self._metrics = metrics
        self.tracing = tracer is not None and not isinstance(tracer, NoOpTracer)

    def enqueued(self) -> RequestTrace | None:
        if not self.tracing:
            return None
        assert self._tracer is not None
        ctx = otel_context.get_current()
        span = self._tracer.start_span(
            "queue wait", context=ctx, attributes={"infergate.model": self.model}
        )
        return RequestTrace(ctx, trace.get_current_span(ctx).get_span_context(), span)

    def left_queue(self, request: RequestTrace | None, why: str = "") -> None:
        """The request's wait is over: its batch starts, or it was dropped (why)."""
        if request is None:
            return
        if why:
            request.queue_span.set_status(Status(StatusCode.ERROR, why))
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
        if not self.tracing:
            return
        assert self._tracer is not None
        attributes: dict[str, str | int] = {
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
        batch = self._tracer.start_span(
            "batch",
            links=[Link(r.span_context) for r in requests if r is not None],
            start_time=started_wall_ns,
            attributes=attributes,
        )
        if error is not None:
            batch.record_exception(error)
            batch.set_status(Status(StatusCode.ERROR, str(error)))
        if execution is not None:
            end_ns = execution.started_wall_ns + execution.infer_ns
            # One attribute only: each costs encoding time on every request, and the
            # linked batch span carries the rest.
            per_request = {"infergate.arm": execution.arm.name}
            for request in requests:
                if request is None:
                    continue
                backend = self._tracer.start_span(
                    "backend",
                    context=request.context,
                    start_time=execution.started_wall_ns,
                    attributes=per_request,
                )
                backend.end(end_time=end_ns)
        batch.end(end_time=time.time_ns())
