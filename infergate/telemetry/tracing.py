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

import functools
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from infergate import __version__
from infergate.telemetry import otlp_wire
from infergate.telemetry.otlp_wire import KIND_SERVER, AttributeValue
from infergate.telemetry.records import Record, nonzero
from infergate.telemetry.spans import (
    BatchSettings,
    EncodingSink,
    Exporter,
    ExportPipeline,
    Sink,
    Span,
)

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
            self._new_trace_id, self._new_span_id = _id_sources(id_generator)

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
        # object per request (see root_bound).
        trace_id = self._new_trace_id() or nonzero(self._new_trace_id)
        bound = self._root_bound
        if bound is None:
            return self._start_sampled(name, _NO_PARENT, trace_id, 0, attributes)
        if trace_id & _TRACE_ID_LOW_BITS >= bound:
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


# TraceIdRatioBased decides on the trace id's low 64 bits (for 64-bit trace ids).
_TRACE_ID_LOW_BITS = (1 << 64) - 1
_ALWAYS = 1 << 64  # a bound every trace id's low bits are under


def root_bound(sampler: Sampler) -> int | None:
    """The sampler's decision for a new trace (no parent), as a bound: a trace is
    sampled when its id's low 64 bits are under it. Known for the SDK's standard
    samplers (always_on/off, traceidratio, and parentbased_* of those, the
    OTEL_TRACES_SAMPLER values); None for any other, which is then asked each time.
    """
    from opentelemetry.sdk.trace.sampling import (
        Decision,
        ParentBased,
        Sampler,
        StaticSampler,
        TraceIdRatioBased,
    )

    kind = type(sampler)
    # The standard classes and their subclasses that only choose a constructor
    # (ParentBasedTraceIdRatio, _AlwaysOn...), not the decision.
    if isinstance(sampler, ParentBased) and kind.should_sample is ParentBased.should_sample:
        root = getattr(sampler, "_root", None)
        return root_bound(root) if isinstance(root, Sampler) else None
    if isinstance(sampler, StaticSampler) and kind.should_sample is StaticSampler.should_sample:
        decision = getattr(sampler, "_decision", None)
        if not isinstance(decision, Decision):
            return None
        return _ALWAYS if decision.is_sampled() else 0  # type: ignore[no-untyped-call]
    if (
        isinstance(sampler, TraceIdRatioBased)
        and kind.should_sample is TraceIdRatioBased.should_sample
    ):
        return int(sampler.bound)
    return None


def _no_id() -> int:
    raise RuntimeError("tracing is off: no ids to make")


def _id_sources(ids: IdGenerator | None) -> tuple[Callable[[], int], Callable[[], int]]:
    """(new trace id, new span id).

    For the SDK's default generator these are random.getrandbits itself, called in C;
    they may give 0, which is not an id, so callers draw again (records.nonzero).
    Any other generator (OTEL_PYTHON_ID_GENERATOR) is called as it is.
    """
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    generator = ids or RandomIdGenerator()
    if type(generator) is not RandomIdGenerator:
        return generator.generate_trace_id, generator.generate_span_id
    return functools.partial(random.getrandbits, 128), functools.partial(random.getrandbits, 64)


_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _BytesTraceStub:
    """TraceService's stub, sending a request already encoded (bytes) as it is."""

    def __init__(self, channel: Any) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        # No request serializer: gRPC sends bytes unchanged.
        self.Export = channel.unary_unary(
            _EXPORT_METHOD, response_deserializer=ExportTraceServiceResponse.FromString
        )


class OtlpGrpcExporter(Exporter):
    """The SDK's OTLP/gRPC span exporter, sending requests we encoded ourselves.

    The SDK exporter keeps what must stay standard: OTEL_EXPORTER_OTLP_* (endpoint,
    headers, TLS, compression, timeout) and its retries with backoff, reconnecting
    included. Only the request is ours: its stub (the `_stub` it makes clients from)
    sends our bytes as they are. Should an SDK version not make its client from
    `_stub`, the bytes are parsed into the SDK's request type instead (the cost of a
    parse and a serialize, about 5 us a request).
    """

    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
        from opentelemetry.sdk.trace.export import SpanExportResult

        class Sender(OTLPSpanExporter):
            def _translate_data(self, data: Any) -> Any:
                if isinstance(self._client, _BytesTraceStub):
                    return data[0]
                return ExportTraceServiceRequest.FromString(data[0])

            def _count_data(self, data: Any) -> int:
                return int(data[1])

        self._sender = Sender()
        self._sender._stub = _BytesTraceStub
        self._sender._client = _BytesTraceStub(self._sender._channel)  # type: ignore[assignment]
        self._success = SpanExportResult.SUCCESS

    def export(self, payload: bytes, count: int) -> bool:
        # _export is the SDK exporter's send-with-retries, which export() wraps.
        return bool(self._sender._export((payload, count)) == self._success)  # type: ignore[arg-type]

    def shutdown(self) -> None:
        self._sender.shutdown()


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
