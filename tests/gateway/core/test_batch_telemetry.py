"""The batch queue's spans: one batch span recorded, its requests' children derived
from it where spans are encoded, and a failed queue wait recorded at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from infergate.gateway.core.arms import Arm
from infergate.gateway.core.batch_telemetry import BatchTelemetry
from infergate.gateway.core.routing import Execution
from infergate.telemetry import spans
from infergate.telemetry.spans import Span
from infergate.telemetry.tracing import Tracing, setup_tracing
from tests.telemetry.test_spans import Captured, values

ARM = Arm("onnxruntime", "cpu", "fp32", runtime=None)  # type: ignore[arg-type]


Traced = tuple[Tracing, Captured, BatchTelemetry]


@pytest.fixture
def traced() -> Iterator[Traced]:
    """Tracing that captures what it exports, and a model's batch telemetry on it."""
    exporter = Captured()
    tracing = setup_tracing(True, {"OTEL_BSP_SCHEDULE_DELAY": "60000"}, exporter=exporter)
    yield tracing, exporter, BatchTelemetry("digits", tracing, None)
    tracing.shutdown()


def request_span(tracing: Tracing, request_id: str) -> Span:
    span = tracing.start_request("rpc", None, {"infergate.request_id": request_id})
    assert span is not None
    return span


def exported(tracing: Tracing, exporter: Captured) -> dict[str, list[Any]]:
    assert tracing.flush(10)
    by_name: dict[str, list[Any]] = {}
    for span in exporter.spans():
        by_name.setdefault(span.name, []).append(span)
    return by_name


def test_a_batch_records_one_span_and_its_requests_children_are_derived(
    traced: Traced,
) -> None:
    tracing, exporter, telemetry = traced
    servers = [request_span(tracing, str(i)) for i in range(2)]
    queued_ns = []
    for server in servers:  # each request joins the queue inside its own server span
        token = spans.current.set(server)
        assert telemetry.enqueued() is server
        spans.current.reset(token)
        queued_ns.append(time.perf_counter_ns())
    started = (time.perf_counter_ns(), time.time_ns())
    execution = Execution({}, ARM, infer_ns=400_000, started_wall_ns=started[1] + 1_000)
    telemetry.batch_done(servers, queued_ns, 3, started, execution)
    for server in servers:
        server.end()
    got = exported(tracing, exporter)
    (batch,) = got["batch"]
    assert {(link.trace_id, link.span_id) for link in batch.links} == {
        (s.trace_id.to_bytes(16, "big"), s.span_id.to_bytes(8, "big")) for s in servers
    }
    assert values(batch.attributes) == {
        "infergate.model": "digits",
        "infergate.backend": "onnxruntime",
        "infergate.device": "cpu",
        "infergate.variant": "fp32",
        "infergate.arm": "onnxruntime/cpu/fp32",
        "infergate.batch.rows": 3,
        "infergate.batch.requests": 2,
    }
    assert batch.start_time_unix_nano == started[1]
    for name in ("queue wait", "backend"):
        children = got[name]
        assert sorted(c.parent_span_id for c in children) == sorted(
            s.span_id.to_bytes(8, "big") for s in servers
        )
        assert len({c.span_id for c in children}) == 2
    for wait in got["queue wait"]:
        # From joining the queue (wall clock) to the batch's start.
        assert started[1] - 10**9 < wait.start_time_unix_nano <= wait.end_time_unix_nano
        assert wait.end_time_unix_nano == started[1]
        assert values(wait.attributes) == {"infergate.model": "digits"}
    for backend in got["backend"]:
        assert backend.start_time_unix_nano == started[1] + 1_000
        assert backend.end_time_unix_nano == started[1] + 1_000 + 400_000
        assert values(backend.attributes) == {"infergate.arm": "onnxruntime/cpu/fp32"}


def test_a_failed_batch_has_an_error_and_no_backend_spans(
    traced: Traced,
) -> None:
    tracing, exporter, telemetry = traced
    server = request_span(tracing, "1")
    started = (time.perf_counter_ns(), time.time_ns())
    error = RuntimeError("device lost")
    telemetry.batch_done([server, None], [started[0], started[0]], 2, started, None, error)
    got = exported(tracing, exporter)
    (batch,) = got["batch"]
    assert batch.status.code == 2 and "device lost" in batch.status.message
    (event,) = batch.events
    assert event.name == "exception"
    assert values(event.attributes) == {
        "exception.type": "RuntimeError",
        "exception.message": "device lost",
    }
    # No arm ran it: the batch says what it was, and no arm.
    assert values(batch.attributes) == {
        "infergate.model": "digits",
        "infergate.batch.rows": 2,
        "infergate.batch.requests": 2,
    }
    assert len(batch.links) == 1  # the untraced request has no span to link
    assert len(got["queue wait"]) == 1 and "backend" not in got


def test_a_request_dropped_from_the_queue_gets_a_failed_queue_wait_at_once(
    traced: Traced,
) -> None:
    tracing, exporter, telemetry = traced
    server = request_span(tracing, "1")
    enqueued_ns = time.perf_counter_ns() - 5_000_000  # it waited 5 ms
    telemetry.dropped(server, enqueued_ns, "timed out in the queue")
    (wait,) = exported(tracing, exporter)["queue wait"]
    assert wait.parent_span_id == server.span_id.to_bytes(8, "big")
    assert wait.status.code == 2 and wait.status.message == "timed out in the queue"
    assert wait.end_time_unix_nano - wait.start_time_unix_nano >= 5_000_000


def test_untraced_requests_record_nothing(traced: Traced) -> None:
    tracing, exporter, telemetry = traced
    assert telemetry.enqueued() is None  # no server span: not sampled
    started = (time.perf_counter_ns(), time.time_ns())
    telemetry.batch_done([None], [started[0]], 1, started, None)
    telemetry.dropped(None, started[0], "cancelled")
    assert exported(tracing, exporter) == {}
