"""Spans as the gateway records and encodes them, read back with the official classes."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from infergate.telemetry import otlp_wire
from infergate.telemetry.records import SpanRecord
from infergate.telemetry.spans import BatchSettings, Exporter, ExportPipeline, Sink
from infergate.telemetry.tracing import Tracing, setup_tracing

TRACE = "ab" * 16
PARENT = "cd" * 8


class Captured(Exporter):
    """Keeps every request it is given; can fail or stall on cue."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.counts: list[int] = []
        self.fail_next = False
        self.gate = threading.Event()
        self.gate.set()
        self.exporting = threading.Event()  # set once an export has begun
        self.shut = False

    def export(self, payload: bytes, count: int) -> bool:
        self.exporting.set()
        self.gate.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("collector exploded")
        self.requests.append(ExportTraceServiceRequest.FromString(payload))
        self.counts.append(count)
        return True

    def shutdown(self) -> None:
        self.shut = True

    def spans(self) -> list:  # type: ignore[type-arg]
        return [
            span
            for request in self.requests
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]


def values(attributes) -> dict[str, object]:  # type: ignore[no-untyped-def]
    out: dict[str, object] = {}
    for kv in attributes:
        out[kv.key] = getattr(kv.value, kv.value.WhichOneof("value"))
    return out


def test_the_wire_encoding_reads_back_field_for_field() -> None:
    encoded = otlp_wire.span(
        trace_id=int(TRACE, 16),
        span_id=2**64 - 1,
        parent_span_id=int(PARENT, 16),
        name="inference.GRPCInferenceService/ModelInfer",
        kind=2,
        start_ns=1_700_000_000_123_456_789,
        end_ns=1_700_000_000_223_456_789,
        attributes_bytes=otlp_wire.attributes(
            9, {"s": "naïve", "t": True, "f": False, "i": -3, "big": 2**62, "d": 0.25, "e": ""}
        ),
        trace_state="vendor=1",
        links=[(1, 2), (int(TRACE, 16), 7)],
        events=[(5, "exception", {"exception.type": "ValueError"})],
        status_code=2,
        status_message="INVALID_ARGUMENT: bad",
    )
    request = ExportTraceServiceRequest.FromString(
        otlp_wire.export_request(
            otlp_wire.resource({"service.name": "svc"}),
            otlp_wire.scope("infergate", "1.2"),
            [encoded],
        )
    )
    (resource_spans,) = request.resource_spans
    assert values(resource_spans.resource.attributes) == {"service.name": "svc"}
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("infergate", "1.2")
    (span,) = scope_spans.spans
    assert span.trace_id.hex() == TRACE and span.span_id == b"\xff" * 8
    assert span.parent_span_id.hex() == PARENT
    assert span.name == "inference.GRPCInferenceService/ModelInfer" and span.kind == 2
    assert span.start_time_unix_nano == 1_700_000_000_123_456_789
    assert span.end_time_unix_nano == 1_700_000_000_223_456_789
    assert values(span.attributes) == {
        "s": "naïve",
        "t": True,
        "f": False,
        "i": -3,
        "big": 2**62,
        "d": 0.25,
        "e": "",
    }
    assert span.trace_state == "vendor=1"
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in span.links] == [
        ("0" * 31 + "1", "0" * 15 + "2"),
        (TRACE, "0" * 15 + "7"),
    ]
    (event,) = span.events
    assert (event.time_unix_nano, event.name) == (5, "exception")
    assert values(event.attributes) == {"exception.type": "ValueError"}
    assert (span.status.code, span.status.message) == (2, "INVALID_ARGUMENT: bad")


def test_a_root_span_without_status_has_no_parent_and_unset_status() -> None:
    encoded = otlp_wire.span(
        trace_id=1,
        span_id=1,
        parent_span_id=0,
        name="batch",
        kind=1,
        start_ns=1,
        end_ns=2,
        attributes_bytes=b"",
    )
    request = ExportTraceServiceRequest.FromString(
        otlp_wire.export_request(b"", otlp_wire.scope("x", ""), [encoded])
    )
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.parent_span_id == b"" and span.status.code == 0 and not span.HasField("status")


@pytest.mark.parametrize("trace_state", ["", "vendor=1"])
def test_a_child_span_is_the_same_message_as_the_general_encoding(trace_state: str) -> None:
    fields = {
        "trace_id": int(TRACE, 16),
        "span_id": 2**64 - 1,
        "parent_span_id": int(PARENT, 16),
        "trace_state": trace_state,
        "start_ns": 1_700_000_000_123_456_789,
        "end_ns": 1_700_000_000_223_456_789,
    }
    attributes = {"infergate.arm": "onnxruntime/cpu/fp32"}
    fast = otlp_wire.child_span(
        **fields,  # type: ignore[arg-type]
        name_bytes=otlp_wire.name_field("backend"),
        attributes_bytes=otlp_wire.attribute(9, "infergate.arm", "onnxruntime/cpu/fp32"),
    )
    general = otlp_wire.span(
        **fields,  # type: ignore[arg-type]
        name="backend",
        kind=1,
        attributes_bytes=otlp_wire.attributes(9, attributes),
    )
    assert fast == general


class Threads(Sink):
    """Notes the thread that prepares and the one that sends each batch."""

    def __init__(self) -> None:
        self.prepared_in: list[str] = []
        self.sent_in: list[str] = []

    def prepare(self, records: list[SpanRecord]) -> list[SpanRecord]:
        self.prepared_in.append(threading.current_thread().name)
        return records

    def send(self, prepared: object) -> bool:
        self.sent_in.append(threading.current_thread().name)
        return True


def test_a_full_batch_is_prepared_where_it_filled_and_sent_by_the_export_thread() -> None:
    sink = Threads()
    pipeline = ExportPipeline(sink, BatchSettings(60.0, 64, 4))
    tracing = Tracing(pipeline, ALWAYS_ON, RandomIdGenerator())
    for i in range(5):  # a full batch of 4, then one left for the flush
        span = tracing.start_request(f"s{i}", None, {})
        assert span is not None
        span.end()
    assert tracing.flush(10)
    here = threading.current_thread().name
    assert sink.prepared_in == [here, "infergate-span-export"]
    assert sink.sent_in == ["infergate-span-export"] * 2
    tracing.shutdown()


class Unpreparable(Threads):
    def prepare(self, records: list[SpanRecord]) -> list[SpanRecord]:
        raise ValueError("unmarshallable object")


def test_a_batch_that_cannot_be_prepared_is_lost_not_the_request() -> None:
    pipeline = ExportPipeline(Unpreparable(), BatchSettings(60.0, 64, 2))
    tracing = Tracing(pipeline, ALWAYS_ON, RandomIdGenerator())
    for i in range(2):
        span = tracing.start_request(f"s{i}", None, {})
        assert span is not None
        span.end()  # the second fills the batch: prepared here, and it fails
    assert pipeline.lost == 2 and not pipeline._ready
    tracing.shutdown()


def tracing_with(exporter: Captured, **env: str):  # type: ignore[no-untyped-def]
    return setup_tracing(True, {"OTEL_SERVICE_NAME": "svc", **env}, exporter=exporter)


def test_a_request_span_joins_the_callers_trace_and_exports_with_its_children() -> None:
    exporter = Captured()
    tracing = tracing_with(exporter)
    header = [("traceparent", f"00-{TRACE}-{PARENT}-01"), ("tracestate", "vendor=1")]
    server = tracing.start_request("rpc", header, {"infergate.model": "m"})
    assert server is not None
    child = server.child("queue wait")
    child.set_error("timed out in the queue")
    child.end()
    server.attributes["rpc.grpc.status_code"] = 0
    server.end()
    tracing.shutdown()
    assert exporter.shut
    spans = {s.name: s for s in exporter.spans()}
    assert set(spans) == {"rpc", "queue wait"}
    assert spans["rpc"].trace_id.hex() == TRACE and spans["rpc"].parent_span_id.hex() == PARENT
    assert spans["rpc"].trace_state == "vendor=1"
    assert spans["queue wait"].parent_span_id == spans["rpc"].span_id
    assert spans["queue wait"].trace_id.hex() == TRACE
    assert spans["queue wait"].status.code == 2
    resource = values(exporter.requests[0].resource_spans[0].resource.attributes)
    assert resource["service.name"] == "svc"


def test_the_sampler_is_obeyed(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = Captured()
    tracing = tracing_with(exporter)
    unsampled = [("traceparent", f"00-{TRACE}-{PARENT}-00")]
    assert tracing.start_request("rpc", unsampled, {}) is None  # parent-based: parent said no
    # The SDK's provider reads the sampler from the process environment.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    never = tracing_with(Captured())
    assert never.start_request("rpc", None, {}) is None
    assert never.start_request("rpc", [("user-agent", "x")], {}) is None
    started = tracing.start_request("rpc", None, {})
    assert started is not None and started.parent_span_id == 0  # a new trace
    other = tracing.start_request("rpc", [("user-agent", "x")], {})  # no traceparent
    assert other is not None and other.parent_span_id == 0
    tracing.shutdown()
    never.shutdown()


def test_batches_are_exported_by_size_and_a_full_queue_drops_instead_of_blocking() -> None:
    exporter = Captured()
    exporter.gate.clear()  # the first export stalls, as a slow collector would
    tracing = tracing_with(
        exporter,
        OTEL_BSP_MAX_QUEUE_SIZE="8",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4",
        OTEL_BSP_SCHEDULE_DELAY="60000",
    )
    first = [tracing.start_request(f"s{i}", None, {}) for i in range(4)]
    for span in first:
        assert span is not None
        span.end()  # a full batch: the thread takes it and stalls in export
    assert exporter.exporting.wait(5)
    started = time.perf_counter()
    for i in range(20):
        span = tracing.start_request(f"t{i}", None, {})
        assert span is not None
        span.end()
    assert time.perf_counter() - started < 1.0  # never waited for the stalled export
    pipeline = tracing._pipeline
    assert pipeline is not None and pipeline.dropped == 12
    exporter.gate.set()
    assert tracing.flush(10)
    assert exporter.counts == [4, 4, 4] and len(exporter.spans()) == 12
    tracing.shutdown()


def test_a_failing_export_loses_that_batch_only() -> None:
    exporter = Captured()
    exporter.fail_next = True
    tracing = setup_tracing(True, {"OTEL_BSP_SCHEDULE_DELAY": "60000"}, exporter=exporter)
    for name in ("lost", "kept"):
        span = tracing.start_request(name, None, {})
        assert span is not None
        span.end()
        assert tracing.flush(10)
    assert [s.name for s in exporter.spans()] == ["kept"]
    tracing.shutdown()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, BatchSettings()),
        (
            {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BSP_MAX_QUEUE_SIZE": "10"},
            BatchSettings(schedule_delay_s=0.1, max_queue_size=10),
        ),
        ({"OTEL_BSP_SCHEDULE_DELAY": "soon"}, BatchSettings()),
    ],
)
def test_batch_settings_follow_the_otel_bsp_variables(
    env: dict[str, str], expected: BatchSettings
) -> None:
    assert BatchSettings.from_env(env) == expected


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        f"00-{'0' * 32}-{PARENT}-01",  # an all-zero trace id is invalid
        f"ff-{TRACE}-{PARENT}-01",  # version ff is forbidden
        f"00-{TRACE}-{PARENT}",  # no flags
        "",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace_instead_of_failing(header: str) -> None:
    exporter = Captured()
    tracing = tracing_with(exporter)
    metadata = [("traceparent", header), ("tracestate", "x=" + "y" * 5000)]
    span = tracing.start_request("rpc", metadata, {})
    assert span is not None and span.parent_span_id == 0
    assert f"{span.trace_id:032x}" != TRACE
    span.end()
    tracing.shutdown()
    assert [s.name for s in exporter.spans()] == ["rpc"]
