"""OpenTelemetry tracing, configured by the standard OTEL_* environment variables.

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
is set (or the `tracing` setting forces it), and off with OTEL_SDK_DISABLED=true.
Spans leave through a BatchSpanProcessor over OTLP/gRPC: export happens on its own
thread, never on the request path. The provider belongs to the server that made it
(no global provider is installed), and shutdown() flushes it.

Off, the tracer is OpenTelemetry's no-op tracer, so instrumented code costs almost
nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_PROPAGATOR = TraceContextTextMapPropagator()


class _MetadataGetter(Getter[Iterable[tuple[str, str | bytes]]]):
    """Reads W3C trace context headers out of gRPC invocation metadata."""

    def get(self, carrier: Iterable[tuple[str, str | bytes]], key: str) -> list[str] | None:
        values = [v.decode() if isinstance(v, bytes) else v for k, v in carrier if k == key]
        return values or None

    def keys(self, carrier: Iterable[tuple[str, str | bytes]]) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


@dataclass
class Tracing:
    tracer: trace.Tracer
    enabled: bool
    _provider: object | None = None

    def extract(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Context | None:
        """The caller's trace context from `traceparent` metadata, if any."""
        if not self.enabled or not metadata:
            return None
        return _PROPAGATOR.extract(list(metadata), getter=_GETTER)

    def shutdown(self) -> None:
        """Flush what is buffered and stop the exporter."""
        if self._provider is not None:
            self._provider.shutdown()  # type: ignore[attr-defined]
            self._provider = None


def tracing_wanted(forced: bool | None, environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    if forced is not None:
        return forced
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def disabled() -> Tracing:
    return Tracing(trace.NoOpTracer(), enabled=False)


def setup_tracing(forced: bool | None = None, environ: Mapping[str, str] | None = None) -> Tracing:
    """A tracer per the environment; the no-op tracer when tracing is off."""
    env = os.environ if environ is None else environ
    if not tracing_wanted(forced, env):
        return disabled()
    # Imported here: the SDK and the gRPC exporter are only needed when tracing is on.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the
    # provider reads OTEL_TRACES_SAMPLER(_ARG); the exporter OTEL_EXPORTER_OTLP_*;
    # the processor OTEL_BSP_*.
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "infergate")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    log.info("tracing on: exporting spans over OTLP/gRPC to %s", endpoint or "the default endpoint")
    return Tracing(provider.get_tracer("infergate"), enabled=True, _provider=provider)
