"""Traces (OpenTelemetry, OTLP) and metrics (Prometheus): a leaf any layer may use."""

from infergate.telemetry import spans
from infergate.telemetry.metrics import Metrics
from infergate.telemetry.tracing import Tracing, setup_tracing

__all__ = ["Metrics", "Tracing", "setup_tracing", "spans"]
