"""OpenTelemetry tracing, configured by the standard OTEL_* environment variables.

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
is set (or the `tracing` setting forces it), and off with OTEL_SDK_DISABLED=true.
Spans are recorded by infergate.telemetry.spans (why not SDK spans: see there) and
leave in batches over OTLP/gRPC from an exporter process of their own (fed by an
export thread), never on the request path.
Nothing global is installed: the tracing belongs to the server that made it, and
shutdown() flushes it.

Off, no span is started: instrumented code checks for None and costs almost
nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from infergate import __version__
from infergate.telemetry import otlp_wire
from infergate.telemetry.otlp_wire import KIND_SERVER, AttributeValue
from infergate.telemetry.records import Record, nonzero
from infergate.telemetry.sampling import TRACE_ID_LOW_BITS, root_bound
from infergate.telemetry.spans import (
    BatchSettings,
    EncodingSink,
    Exporter,
    ExportPipeline,
    Sink,
    Span,
)
from infergate.telemetry.trace_ids import id_sources

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.sdk.trace.sampling import Sampler

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
_NO_PARENT = Context()  # what the propagator returns for a carrier without a traceparent


class Tracing:
    """Starts the gateway's spans; disabled (the default) it starts none."""

    def __init__(
        self,
        pipeline: ExportPipeline | None = None,
        sampler: Sampler | None = None,
        id_generator: IdGenerator | None = None,
    ) -> None:
        self._pipeline = pipeline
        self.enabled = pipeline is not None
        self._sampler = sampler
        self._root_bound: int | None = None
        self._new_trace_id = self._new_span_id = _no_id
        if pipeline is not None:  # off, the SDK is never imported
            self._root_bound = root_bound(sampler) if sampler is not None else None
            self._new_trace_id, self._new_span_id = id_sources(id_generator)

    def extract(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Context | None:
        """The caller's trace context from `traceparent` metadata, if any."""
        if not self.enabled or not metadata:
            return None
        carrier = list(metadata)
        # Most calls carry no trace context: skip the propagator's parsing for them.
        if not any(key == "traceparent" for key, _ in carrier):
            return _NO_PARENT
        return _PROPAGATOR.extract(carrier, getter=_GETTER)

    def start_request(
        self,
        name: str,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        attributes: dict[str, AttributeValue],
    ) -> Span | None:
        """A server span joined to the caller's trace; None when off or not sampled."""
        pipeline = self._pipeline
        if pipeline is None:
            return None
        if metadata:
            for key, _ in metadata:
                if key == "traceparent":
                    return self._start_joined(name, metadata, attributes)
        # A new trace: most calls. With one of the SDK's standard samplers the
        # decision is the same arithmetic as its own, without a call or a result
        # object per request (see sampling.root_bound).
        trace_id = self._new_trace_id() or nonzero(self._new_trace_id)
        bound = self._root_bound
        if bound is None:
            return self._start_sampled(name, _NO_PARENT, trace_id, 0, attributes)
        if trace_id & TRACE_ID_LOW_BITS >= bound:
            return None
        return Span(
            pipeline, self._new_span_id, name, trace_id, 0, KIND_SERVER, time.time_ns(), attributes
        )

    def _start_joined(
        self,
        name: str,
        metadata: Iterable[tuple[str, str | bytes]],
        attributes: dict[str, AttributeValue],
    ) -> Span | None:
        """A request carrying `traceparent`: the SDK parses it and its sampler decides."""
        # start_request found the header: straight to the propagator, not extract().
        context = _PROPAGATOR.extract(list(metadata), getter=_GETTER)
        parent = trace.get_current_span(context).get_span_context()
        if not parent.is_valid:  # malformed: a new trace, as without one
            trace_id = self._new_trace_id() or nonzero(self._new_trace_id)
            return self._start_sampled(name, context, trace_id, 0, attributes)
        return self._start_sampled(name, context, parent.trace_id, parent.span_id, attributes)

    def _start_sampled(
        self,
        name: str,
        context: Context | None,
        trace_id: int,
        parent_span_id: int,
        attributes: dict[str, AttributeValue],
    ) -> Span | None:
        assert self._pipeline is not None and self._sampler is not None
        sampled = self._sampler.should_sample(
            context, trace_id, name, trace.SpanKind.SERVER, attributes
        )
        if not sampled.decision.is_sampled():  # type: ignore[no-untyped-call]
            return None
        return Span(
            self._pipeline,
            self._new_span_id,
            name,
            trace_id,
            parent_span_id,
            KIND_SERVER,
            time.time_ns(),
            attributes,
            sampled.trace_state.to_header() if sampled.trace_state else "",
        )

    def record(self, record: Record) -> None:
        """Queue a record made elsewhere (a batch's: see records.BatchRecord)."""
        if self._pipeline is not None:
            self._pipeline.submit(record)

    def flush(self, timeout_s: float = 30.0) -> bool:
        return self._pipeline.flush(timeout_s) if self._pipeline is not None else True

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter."""
        if self._pipeline is not None:
            self._pipeline.shutdown()
            self._pipeline = None


def _no_id() -> int:
    raise RuntimeError("tracing is off: no ids to make")


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
    return Tracing()


def setup_tracing(
    forced: bool | None = None,
    environ: Mapping[str, str] | None = None,
    exporter: Exporter | None = None,
) -> Tracing:
    """Tracing per the environment; disabled when off.

    Spans go to the OTLP/gRPC exporter in a process of its own (see
    infergate.telemetry.export_process); `exporter` instead exports them from the
    export thread, in this process (tests use it to capture what is sent).
    """
    env = os.environ if environ is None else environ
    if not tracing_wanted(forced, env):
        return disabled()
    # Imported here: the SDK and the gRPC exporter are only needed when tracing is on.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES and the
    # provider OTEL_TRACES_SAMPLER(_ARG); the exporter reads OTEL_EXPORTER_OTLP_* and
    # BatchSettings OTEL_BSP_*. No SDK span is ever made from this provider.
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "infergate")})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    resource_bytes = otlp_wire.resource(
        {k: v for k, v in resource.attributes.items() if isinstance(v, str | bool | int | float)}
    )
    scope_bytes = otlp_wire.scope("infergate", __version__)
    sink: Sink
    if exporter is not None:
        sink = EncodingSink(exporter, resource_bytes, scope_bytes)
    else:
        from infergate.telemetry.export_process import ProcessSink

        # The exporter process reads OTEL_EXPORTER_OTLP_* from its environment.
        sink = ProcessSink(resource_bytes, scope_bytes, {**os.environ, **env})
    pipeline = ExportPipeline(sink, BatchSettings.from_env(env))
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    log.info("tracing on: exporting spans over OTLP/gRPC to %s", endpoint or "the default endpoint")
    return Tracing(pipeline, provider.sampler, provider.id_generator)
