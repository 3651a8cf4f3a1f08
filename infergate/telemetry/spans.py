"""The gateway's spans: recorded cheaply on the request path, exported in batches.

Why not the OpenTelemetry SDK's Span objects: on the request path each cost 40-70 us
(locks, attribute validation, context attach, processor hooks) and the OTLP
exporter another 70 us a span to encode, on 2 cores where a small model's whole
request costs about 800 us: four spans a request cut the throughput of a small
model by 40%. Here a span is a plain slotted object; finished spans queue as
plain records (infergate.telemetry.records, where a batch's spans are one record),
and each full batch is prepared by the thread that filled it and sent by an export
thread to a Sink: by default the export process
(infergate.telemetry.export_process), which writes the OTLP bytes directly
(infergate.telemetry.otlp_wire) off this interpreter's GIL. The SDK still provides
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
from typing import Any

from infergate.telemetry import otlp_wire
from infergate.telemetry.otlp_wire import KIND_INTERNAL, STATUS_ERROR, AttributeValue
from infergate.telemetry.records import SPAN, Record, SpanRecord, encode, nonzero, span_count

log = logging.getLogger(__name__)


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
        # ids may be random.getrandbits itself (see tracing): 0 is not a span id.
        self.span_id = ids() or nonzero(ids)
        self.parent_span_id = parent_span_id
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = 0
        self.attributes = attributes
        self.trace_state = trace_state
        self.links: Sequence[tuple[int, int]] = ()
        # Events come with errors only: a tuple until then, so most spans allocate none.
        self.events: Sequence[tuple[int, str, Mapping[str, AttributeValue]]] = ()
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
            self.events = [
                *self.events,
                (
                    time.time_ns(),
                    "exception",
                    {"exception.type": type(exc).__name__, "exception.message": str(exc)},
                ),
            ]

    def end(self, end_ns: int | None = None) -> None:
        self.end_ns = time.time_ns() if end_ns is None else end_ns
        self._pipeline.submit(self.record())

    def record(self) -> SpanRecord:
        """The finished span as plain data (tuples, dicts, str, int, float, bool), which
        marshal, twice as fast as pickle here, sends to the export process. Queued as
        this, not as the Span: a tuple of atomic values leaves the garbage collector's
        lists at its first collection, so a full queue costs the collections nothing."""
        return (
            SPAN,
            self.trace_id,
            self.span_id,
            self.parent_span_id,
            self.name,
            self.kind,
            self.start_ns,
            self.end_ns,
            self.attributes,
            self.trace_state,
            self.links,
            self.events,
            self.status_code,
            self.status_message,
        )


# The server span of the request this task serves (None: not traced).
current: ContextVar[Span | None] = ContextVar("infergate_request_span", default=None)


class Exporter:
    """Sends one encoded ExportTraceServiceRequest; see infergate.telemetry.otlp_exporter."""

    def export(self, payload: bytes, count: int) -> bool:
        raise NotImplementedError

    def shutdown(self) -> None:
        pass


class Sink:
    """Where finished spans go, a batch at a time, in two steps.

    prepare() runs in the thread that fills a batch, which is the event loop for
    most batches, so it must be cheap C work or nothing at all. send() runs in the
    export thread. The GIL makes the split matter. An export thread that holds the
    GIL for a millisecond (as marshalling 512 spans takes) gets it whenever the
    event loop releases it, such as during a runtime call. The call then seems to
    take that millisecond, and the router stops running such calls inline.
    """

    def prepare(self, records: list[Record]) -> Any:
        """What send() takes for these records; by default the records themselves."""
        return records

    def send(self, prepared: Any) -> bool:
        """Export (or pass on) one prepared batch; False if it was lost."""
        raise NotImplementedError

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything sent so far has been exported."""
        return True

    def shutdown(self, timeout_s: float) -> None:
        pass


def send_or_count_lost(sink: Sink, prepared: Any, records: Sequence[Record]) -> int:
    """Send one prepared batch of records; the spans lost if it failed. A bad span or
    a broken exporter loses that batch only: the caller (a thread or the exporter's
    loop) goes on. Spans are counted only when lost: counting is work per record."""
    try:
        if sink.send(prepared):
            return 0
    except Exception:
        lost = _spans_in(records)
        log.exception("exporting %d spans failed", lost)
        return lost
    return _spans_in(records)


def _spans_in(records: Sequence[Record]) -> int:
    return sum(map(span_count, records))


class EncodingSink(Sink):
    """Encodes each batch as one OTLP request and exports it here, in this thread."""

    def __init__(self, exporter: Exporter, resource_bytes: bytes, scope_bytes: bytes) -> None:
        self._exporter = exporter
        self._resource = resource_bytes
        self._scope = scope_bytes

    def send(self, prepared: Any) -> bool:
        records: list[Record] = prepared
        spans = []
        for record in records:
            spans += encode(record)
        payload = otlp_wire.export_request(self._resource, self._scope, spans)
        return self._exporter.export(payload, len(spans))

    def shutdown(self, timeout_s: float) -> None:
        self._exporter.shutdown()


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
    """Finished spans queue here; one thread takes them to the sink in batches.

    Like the SDK's BatchSpanProcessor: a bounded queue (spans beyond it are dropped
    and counted, never blocking a request), a batch when it is full or every
    schedule delay, and a flush on shutdown. The thread that fills a batch prepares
    it (Sink.prepare); only the export thread sends.
    """

    def __init__(self, sink: Sink, settings: BatchSettings | None = None) -> None:
        self._sink = sink
        self.settings = settings or BatchSettings()
        self._queue: collections.deque[Record] = collections.deque()
        # Read for every span: plain attributes, not through the settings.
        self._max_queued = self.settings.max_queue_size
        self._batch_size = self.settings.max_export_batch_size
        # Prepared batches waiting for the thread: (prepared, their records).
        self._ready: collections.deque[tuple[Any, list[Record]]] = collections.deque()
        self._take = threading.Lock()  # one batch is taken from the queue at a time
        self._prepared = 0  # records prepared so far (under _take)
        self._sent = 0  # records the thread has taken to send so far
        self._wake = threading.Event()
        self._flushed = threading.Condition()
        self._flush_asked = 0  # flush tickets handed out
        self._flush_done = 0  # the last ticket the thread has served
        self._flush_ok = True
        self._flush_deadline = 0.0
        self._stopping = False
        self.dropped = 0  # the queue was full
        self.lost = 0  # the sink failed them
        self._thread = threading.Thread(target=self._run, name="infergate-span-export", daemon=True)
        self._thread.start()

    def submit(self, record: Record) -> None:
        """Queue a finished span's record, or a batch's (see records)."""
        if self._stopping:
            return
        queue = self._queue
        # Records queued, plus those prepared and not yet sent.
        if len(queue) + self._prepared - self._sent >= self._max_queued:
            self.dropped += span_count(record)
            return
        queue.append(record)  # deque.append is atomic: no lock per span
        if len(queue) >= self._batch_size:
            self._prepare_batch()
            self._wake.set()

    def _prepare_batch(self) -> None:
        """Take up to one batch from the queue and prepare it for the thread."""
        with self._take:
            queue = self._queue
            size = min(len(queue), self._batch_size)
            records = [queue.popleft() for _ in range(size)]
            if not records:
                return
            try:
                prepared = self._sink.prepare(records)
            except Exception:
                # On the request path: a batch that cannot be prepared (an attribute
                # marshal cannot write, say) is lost and counted, never the request.
                spans = _spans_in(records)
                log.exception("preparing %d spans for export failed", spans)
                self.lost += spans
                return
            self._ready.append((prepared, records))
            self._prepared += len(records)

    def _run(self) -> None:
        while True:
            timed_out = not self._wake.wait(self.settings.schedule_delay_s)
            self._wake.clear()
            with self._flushed:
                ticket, deadline = self._flush_asked, self._flush_deadline
            flushing = ticket > self._flush_done
            if timed_out or flushing or self._stopping:
                # A partial batch: spans that arrive during an export otherwise wait
                # for their batch to fill (or the delay) instead of going in many
                # small requests.
                while self._queue:
                    self._prepare_batch()
            self._send_ready()
            if flushing:
                ok = self._sink.flush(max(0.0, deadline - time.monotonic()))
                with self._flushed:
                    self._flush_done, self._flush_ok = ticket, ok
                    self._flushed.notify_all()
            if self._stopping and not self._queue and not self._ready:
                return

    def _send_ready(self) -> None:
        while self._ready:
            prepared, records = self._ready.popleft()
            # Out of the queue's bound once taken, as the SDK's batch processor
            # counts the batch it is exporting.
            self._sent += len(records)
            self.lost += send_or_count_lost(self._sink, prepared, records)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Export everything queued so far; False if that took longer than timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._flushed:
            self._flush_asked += 1
            ticket = self._flush_asked
            self._flush_deadline = deadline
        self._wake.set()
        with self._flushed:
            while self._flush_done < ticket:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._flushed.wait(remaining)
            return self._flush_ok

    def shutdown(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        self._stopping = True
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._sink.shutdown(max(1.0, deadline - time.monotonic()))
        if self.dropped:
            log.warning("tracing dropped %d spans: the export queue was full", self.dropped)
        if self.lost:
            log.warning("tracing lost %d spans: their export failed", self.lost)
