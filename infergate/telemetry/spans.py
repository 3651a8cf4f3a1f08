"""The gateway's spans: recorded cheaply on the request path, exported in batches.

Why not the OpenTelemetry SDK's Span objects: on the request path each cost 40-70 us
(locks, attribute validation, context attach, processor hooks) and the OTLP
exporter another 70 us a span to encode, on 2 cores where a small model's whole
request costs about 800 us: four spans a request cut the throughput of a small
model by 40%. Here a span is a plain slotted object, the export thread writes the
OTLP bytes directly (infergate.telemetry.otlp_wire), and the SDK still provides
what should stay standard: the OTEL_* configuration, the sampler, the resource, the
id generator and the OTLP/gRPC exporter (endpoint, headers, TLS, retries).

The span of the request being served is in the `current` context variable, so the
core can hang children on it without knowing about gRPC.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from infergate.telemetry import otlp_wire
from infergate.telemetry.otlp_wire import AttributeValue

log = logging.getLogger(__name__)

# OTLP SpanKind and Status.code values.
KIND_INTERNAL = 1
KIND_SERVER = 2
STATUS_OK = 1
STATUS_ERROR = 2


class Span:
    """One span being recorded; end() hands it to the export pipeline."""

    __slots__ = (
        "_ids",
        "_pipeline",
        "attributes",
        "end_ns",
        "events",
        "kind",
        "links",
        "name",
        "parent_span_id",
        "span_id",
        "start_ns",
        "status_code",
        "status_message",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        pipeline: ExportPipeline,
        ids: Callable[[], int],
        name: str,
        trace_id: int,
        parent_span_id: int,
        kind: int,
        start_ns: int,
        attributes: dict[str, AttributeValue],
        trace_state: str = "",
    ) -> None:
        self._pipeline = pipeline
        self._ids = ids
        self.name = name
        self.trace_id = trace_id
        self.span_id = ids()
        self.parent_span_id = parent_span_id
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = 0
        self.attributes = attributes
        self.trace_state = trace_state
        self.links: Sequence[tuple[int, int]] = ()
        self.events: list[tuple[int, str, Mapping[str, AttributeValue]]] = []
        self.status_code = 0
        self.status_message = ""

    def child(
        self,
        name: str,
        attributes: dict[str, AttributeValue] | None = None,
        start_ns: int | None = None,
    ) -> Span:
        return Span(
            self._pipeline,
            self._ids,
            name,
            self.trace_id,
            self.span_id,
            KIND_INTERNAL,
            time.time_ns() if start_ns is None else start_ns,
            attributes if attributes is not None else {},
            self.trace_state,
        )

    def set_error(self, message: str, exc: BaseException | None = None) -> None:
        self.status_code = STATUS_ERROR
        self.status_message = message
        if exc is not None:
            self.events.append(
                (
                    time.time_ns(),
                    "exception",
                    {"exception.type": type(exc).__name__, "exception.message": str(exc)},
                )
            )

    def end(self, end_ns: int | None = None) -> None:
        self.end_ns = time.time_ns() if end_ns is None else end_ns
        self._pipeline.submit(self)

    def encode(self) -> bytes:
        return otlp_wire.span(
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_span_id=self.parent_span_id,
            name=self.name,
            kind=self.kind,
            start_ns=self.start_ns,
            end_ns=self.end_ns,
            attributes_bytes=otlp_wire.attributes(9, self.attributes),
            trace_state=self.trace_state,
            links=self.links,
            events=self.events,
            status_code=self.status_code,
            status_message=self.status_message,
        )


# The server span of the request this task serves (None: not traced).
current: ContextVar[Span | None] = ContextVar("infergate_request_span", default=None)


class Exporter:
    """Sends one encoded ExportTraceServiceRequest; see infergate.telemetry.tracing."""

    def export(self, payload: bytes, count: int) -> bool:
        raise NotImplementedError

    def shutdown(self) -> None:
        pass


@dataclass(frozen=True)
class BatchSettings:
    """The OTEL_BSP_* settings, with the SDK's defaults (the export timeout is the
    exporter's own: OTEL_EXPORTER_OTLP_TIMEOUT)."""

    schedule_delay_s: float = 5.0
    max_queue_size: int = 2048
    max_export_batch_size: int = 512

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BatchSettings:
        def number(name: str, default: float) -> float:
            raw = environ.get(name, "").strip()
            try:
                value = float(raw) if raw else default
            except ValueError:
                log.warning("%s=%r is not a number; using %s", name, raw, default)
                return default
            return value if value > 0 else default

        return cls(
            schedule_delay_s=number("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
            max_queue_size=int(number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)),
            max_export_batch_size=int(number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)),
        )


class ExportPipeline:
    """Finished spans queue here; one thread encodes and exports them in batches.

    Like the SDK's BatchSpanProcessor: a bounded queue (spans beyond it are dropped
    and counted, never blocking a request), an export when a batch is full or every
    schedule delay, and a flush on shutdown.
    """

    def __init__(
        self,
        exporter: Exporter,
        resource: Mapping[str, AttributeValue],
        scope_name: str,
        scope_version: str,
        settings: BatchSettings | None = None,
    ) -> None:
        self._exporter = exporter
        self._resource = otlp_wire.resource(resource)
        self._scope = otlp_wire.scope(scope_name, scope_version)
        self.settings = settings or BatchSettings()
        self._queue: collections.deque[Span] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._exporting = False
        self._drain = False  # export everything queued, not only full batches
        self._stopping = False
        self.dropped = 0
        self.exported = 0
        self._thread = threading.Thread(target=self._run, name="infergate-span-export", daemon=True)
        self._thread.start()

    def submit(self, span: Span) -> None:
        if self._stopping:
            return
        if len(self._queue) >= self.settings.max_queue_size:
            self.dropped += 1
            return
        self._queue.append(span)  # deque.append is atomic: no lock on the request path
        if len(self._queue) >= self.settings.max_export_batch_size:
            self._wake.set()

    def _run(self) -> None:
        while True:
            timed_out = not self._wake.wait(self.settings.schedule_delay_s)
            self._wake.clear()
            drain, self._drain = self._drain or timed_out or self._stopping, False
            self._export_queued(drain)
            if self._stopping and not self._queue:
                return

    def _export_queued(self, drain: bool) -> None:
        """Full batches only, unless draining: spans that arrive during an export
        wait for their batch to fill (or the schedule delay) instead of going in
        many small requests."""
        size = self.settings.max_export_batch_size
        with self._idle:
            self._exporting = True
        try:
            while len(self._queue) >= size or (drain and self._queue):
                batch = []
                for _ in range(min(len(self._queue), self.settings.max_export_batch_size)):
                    batch.append(self._queue.popleft())
                self._export(batch)
        finally:
            with self._idle:
                self._exporting = False
                self._idle.notify_all()

    def _export(self, batch: list[Span]) -> None:
        try:
            payload = otlp_wire.export_request(
                self._resource, self._scope, [span.encode() for span in batch]
            )
            if self._exporter.export(payload, len(batch)):
                self.exported += len(batch)
        except Exception:  # the export thread must survive a bad span or exporter
            log.exception("exporting %d spans failed", len(batch))

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Export everything queued so far; False if that took longer than timeout_s."""
        deadline = time.monotonic() + timeout_s
        while self._queue or self._exporting:
            self._drain = True
            self._wake.set()
            with self._idle:
                self._idle.wait(0.05)
            if time.monotonic() > deadline:
                return False
        return True

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self.flush(timeout_s)
        self._stopping = True
        self._drain = True
        self._wake.set()
        self._thread.join(timeout_s)
        self._exporter.shutdown()
        if self.dropped:
            log.warning("tracing dropped %d spans: the export queue was full", self.dropped)
