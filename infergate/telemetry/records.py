"""Finished spans as plain data, and their OTLP encoding.

The request path queues records (tuples of ints, strs and dicts of atomic values,
which marshal sends to the export process and the garbage collector stops tracking
at its first look); the exporter turns them into OTLP Span messages. Two kinds:

- a span record: one span, field for field (Span.record());
- a batch record: one runtime call and the requests it served. It stands for the
  "batch" span (in a trace of its own, linked to every request's server span) and,
  per request, a "queue wait" child (from joining the queue to the batch's start)
  and a "backend" child (the runtime call). The exporter makes all of them, the
  batch span's ids included, so the request path records one small tuple per batch.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Mapping, Sequence

from infergate.telemetry import otlp_wire
from infergate.telemetry.otlp_wire import KIND_INTERNAL, STATUS_ERROR, AttributeValue

SPAN, BATCH = 0, 1  # a record's first field

# A finished span, in Span.record()'s field order.
SpanRecord = tuple[
    int,  # SPAN
    int,  # trace id
    int,  # span id
    int,  # parent span id (0: none)
    str,  # name
    int,  # kind
    int,  # start, ns since the epoch
    int,  # end
    Mapping[str, AttributeValue],
    str,  # W3C trace state
    Sequence[tuple[int, int]],  # links: (trace id, span id)
    Sequence[tuple[int, str, Mapping[str, AttributeValue]]],  # events
    int,  # status code
    str,  # status message
]

# A request in a batch: its server span's trace id, span id and trace state, and when
# (ns since the epoch) it joined the queue.
QueuedRequest = tuple[int, int, str, int]
# Why a batch failed: the exception's type name and message, and when (ns).
BatchFailure = tuple[str, str, int]

BatchRecord = tuple[
    int,  # BATCH
    str,  # model
    str,  # arm name (backend/device/variant); "" if no arm ran it
    int,  # rows
    int,  # requests in the batch, traced or not
    int,  # start, ns since the epoch
    int,  # end
    tuple[QueuedRequest, ...],  # its traced requests
    tuple[int, int] | None,  # the runtime call's start and end; None if none returned
    BatchFailure | None,
]

Record = SpanRecord | BatchRecord


def span_count(record: Record) -> int:
    """How many spans a record stands for."""
    if record[0] == SPAN:
        return 1
    batch: BatchRecord = record  # type: ignore[assignment]
    return 1 + len(batch[7]) * (1 if batch[8] is None else 2)


def encode(record: Record) -> list[bytes]:
    """The OTLP Span messages (unframed) a record stands for."""
    if record[0] == SPAN:
        return [_encode_span(record)]  # type: ignore[arg-type]
    return _encode_batch(record)  # type: ignore[arg-type]


def _encode_span(record: SpanRecord) -> bytes:
    (
        _,
        trace_id,
        span_id,
        parent_span_id,
        name,
        kind,
        start_ns,
        end_ns,
        attributes,
        trace_state,
        links,
        events,
        status_code,
        status_message,
    ) = record
    return otlp_wire.span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=name,
        kind=kind,
        start_ns=start_ns,
        end_ns=end_ns,
        attributes_bytes=otlp_wire.attributes(9, attributes),
        trace_state=trace_state,
        links=links,
        events=events,
        status_code=status_code,
        status_message=status_message,
    )


def _encode_batch(record: BatchRecord) -> list[bytes]:
    """The batch span, then two children per request (one if the call did not return).

    The parts every child of one batch shares (names, attributes) are framed once,
    and each child costs two struct packs.
    """
    _, model, arm, rows, requests, start_ns, end_ns, queued, ran, failure = record
    attributes: dict[str, AttributeValue] = {"infergate.model": model}
    if arm:
        backend, device, variant = arm.split("/", 2)
        attributes.update(
            {
                "infergate.backend": backend,
                "infergate.device": device,
                "infergate.variant": variant,
                "infergate.arm": arm,
            }
        )
    attributes["infergate.batch.rows"] = rows
    attributes["infergate.batch.requests"] = requests
    events: list[tuple[int, str, Mapping[str, AttributeValue]]] = []
    status_message = ""
    if failure is not None:
        kind, message, failed_ns = failure
        status_message = message
        events.append(
            (failed_ns, "exception", {"exception.type": kind, "exception.message": message})
        )
    out = [
        otlp_wire.span(
            trace_id=_nonzero_id(128),
            span_id=_nonzero_id(64),
            parent_span_id=0,
            name="batch",
            kind=KIND_INTERNAL,
            start_ns=start_ns,
            end_ns=end_ns,
            attributes_bytes=otlp_wire.attributes(9, attributes),
            # A batch links to the server span of every request it served.
            links=[(request[0], request[1]) for request in queued],
            events=events,
            status_code=STATUS_ERROR if failure is not None else 0,
            status_message=status_message,
        )
    ]
    queue = (
        otlp_wire.name_field("queue wait"),
        otlp_wire.attribute(9, "infergate.model", model),
    )
    if ran is not None:
        call_start_ns, call_end_ns = ran
        backend_parts = (
            otlp_wire.name_field("backend"),
            otlp_wire.attribute(9, "infergate.arm", arm),
        )
    for trace_id, parent_id, trace_state, enqueued_ns in queued:
        out.append(
            otlp_wire.child_span(
                trace_id, _nonzero_id(64), parent_id, trace_state, enqueued_ns, start_ns, *queue
            )
        )
        if ran is not None:
            out.append(
                otlp_wire.child_span(
                    trace_id,
                    _nonzero_id(64),
                    parent_id,
                    trace_state,
                    call_start_ns,
                    call_end_ns,
                    *backend_parts,
                )
            )
    return out


def batch_failure(error: BaseException) -> BatchFailure:
    return (type(error).__name__, str(error), time.time_ns())


def nonzero(draw: Callable[[], int]) -> int:
    """Draw until the value is not 0, which is no trace or span id (random.getrandbits
    gives 0 once in 2**64 or 2**128 draws)."""
    while True:
        value = draw()
        if value:
            return value


def _nonzero_id(bits: int) -> int:
    return random.getrandbits(bits) or nonzero(functools.partial(random.getrandbits, bits))
