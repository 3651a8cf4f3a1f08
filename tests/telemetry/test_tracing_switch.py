"""When tracing is on: the OTEL_* variables and the `tracing` setting."""

from __future__ import annotations

import subprocess
import sys

from infergate.telemetry.tracing import setup_tracing, tracing_wanted

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}


def test_off_unless_an_endpoint_is_set() -> None:
    assert not tracing_wanted(None, {})
    assert tracing_wanted(None, ENDPOINT)
    assert tracing_wanted(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4317"})


def test_the_setting_forces_it_and_sdk_disabled_wins_over_everything() -> None:
    assert tracing_wanted(True, {})
    assert not tracing_wanted(False, ENDPOINT)
    assert not tracing_wanted(None, {**ENDPOINT, "OTEL_SDK_DISABLED": "true"})
    assert not tracing_wanted(True, {"OTEL_SDK_DISABLED": "TRUE"})


def test_off_means_no_spans_and_nothing_to_flush() -> None:
    tracing = setup_tracing(None, {})
    assert not tracing.enabled
    header = [("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")]
    assert tracing.start_request("r", header, {}) is None
    assert tracing.extract([("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")]) is None
    tracing.shutdown()


def test_on_extracts_the_callers_trace_context() -> None:
    tracing = setup_tracing(True, {})
    try:
        assert tracing.enabled
        context = tracing.extract([("traceparent", "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")])
        assert context is not None
        from opentelemetry import trace

        span_context = trace.get_current_span(context).get_span_context()
        assert f"{span_context.trace_id:032x}" == "ab" * 16
        assert f"{span_context.span_id:016x}" == "cd" * 8
    finally:
        tracing.shutdown()


def test_off_the_sdk_is_never_imported() -> None:
    """Tracing off costs no start-up time: the SDK and its exporter stay unloaded."""
    script = (
        "import sys\n"
        "from infergate.telemetry.tracing import setup_tracing\n"
        "tracing = setup_tracing(None, {})\n"
        "assert tracing.start_request('r', [('traceparent', 'x')], {}) is None\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
