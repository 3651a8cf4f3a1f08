"""The span exporter process: spans reach a real OTLP receiver through it, a dead
exporter is restarted, and a stalled one never holds up a request."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from infergate.telemetry import export_process
from infergate.telemetry.export_process import ProcessSink
from infergate.telemetry.spans import ExportPipeline
from infergate.telemetry.tracing import Tracing, setup_tracing
from tests.otlp_receiver import Receiver

TRACE = "ab" * 16
PARENT = "cd" * 8


def tracing_to(receiver: Receiver) -> Tracing:
    return setup_tracing(
        True,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_SERVICE_NAME": "svc",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",  # only flushes send
        },
    )


def sink_of(tracing: Tracing) -> ProcessSink:
    pipeline = tracing._pipeline
    assert isinstance(pipeline, ExportPipeline) and isinstance(pipeline._sink, ProcessSink)
    return pipeline._sink


def kill_exporter(tracing: Tracing) -> ProcessSink:
    """Kill the exporter process under a running pipeline; its sink is returned."""
    sink = sink_of(tracing)
    assert sink._child is not None
    sink._child.kill()
    sink._child.wait()
    return sink


def end_span(tracing: Tracing, name: str) -> None:
    span = tracing.start_request(name, [("traceparent", f"00-{TRACE}-{PARENT}-01")], {"n": name})
    assert span is not None
    child = span.child("queue wait", {"rows": 3})
    child.set_error("timed out", TimeoutError("late"))
    child.end()
    span.links = [(int(TRACE, 16), int(PARENT, 16))]
    span.end()


async def test_spans_reach_a_real_receiver_through_the_exporter_process(
    receiver: Receiver,
) -> None:
    tracing = tracing_to(receiver)
    end_span(tracing, "first")
    assert await asyncio.to_thread(tracing.flush, 20)  # flush waits for the receiver
    spans = {s.name: s for s in receiver.spans}
    assert set(spans) == {"first", "queue wait"}
    assert spans["first"].trace_id == TRACE and spans["first"].parent_span_id == PARENT
    assert spans["first"].attributes == {"n": "first"}
    assert spans["first"].links == [(TRACE, PARENT)]
    assert spans["first"].service_name == "svc"
    assert spans["queue wait"].parent_span_id == spans["first"].span_id
    assert spans["queue wait"].status_code == 2 and spans["queue wait"].attributes == {"rows": 3}
    child = sink_of(tracing)._child
    assert child is not None
    # It only takes CPU time the gateway leaves (this machine is Linux).
    assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == export_process.NICENESS
    await asyncio.to_thread(tracing.shutdown)
    assert child.returncode == 0  # end of input: it stopped by itself


async def test_a_killed_exporter_is_restarted_by_the_next_batch(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_process, "RESTART_INTERVAL_S", 0.0)
    tracing = tracing_to(receiver)
    first = sink_of(tracing)._child
    sink = kill_exporter(tracing)
    end_span(tracing, "after the crash")
    assert await asyncio.to_thread(tracing.flush, 20)
    assert sink.restarts == 1 and sink._child is not first
    assert {s.name for s in receiver.spans} == {"after the crash", "queue wait"}
    await asyncio.to_thread(tracing.shutdown)


async def test_a_dead_exporter_loses_batches_until_it_may_restart(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_process, "RESTART_INTERVAL_S", 3600.0)
    tracing = tracing_to(receiver)
    sink = kill_exporter(tracing)
    end_span(tracing, "lost")
    assert not await asyncio.to_thread(tracing.flush, 5)  # nothing to flush through
    pipeline = tracing._pipeline
    assert pipeline is not None and pipeline.lost == 2 and sink.restarts == 0
    await asyncio.to_thread(tracing.shutdown)
    assert not receiver.spans


def test_a_stalled_exporter_never_blocks_a_request() -> None:
    # An exporter that reads nothing: the pipe fills, the export thread blocks in
    # write(), the queue fills and spans are dropped, and requests go on.
    stalled = [sys.executable, "-c", "import time; time.sleep(60)"]
    sink = ProcessSink(b"", b"", {}, command=stalled)
    pipeline = ExportPipeline(sink)
    tracing = Tracing(pipeline, ALWAYS_ON, RandomIdGenerator())
    started = time.perf_counter()
    for i in range(20_000):
        span = tracing.start_request("r", None, {"i": i, "pad": "x" * 200})
        assert span is not None
        span.end()
    assert time.perf_counter() - started < 10
    assert pipeline.dropped > 0
    assert not pipeline.flush(0.5)  # gives up at its timeout
    child = sink._child
    assert child is not None
    pipeline.shutdown(timeout_s=1)
    assert child.poll() is not None  # killed when it would not stop
