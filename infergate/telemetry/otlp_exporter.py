"""The OTLP/gRPC exporter the exporter process sends spans with (see export_process).

The SDK's exporter keeps what must stay standard: OTEL_EXPORTER_OTLP_* (endpoint,
headers, TLS, compression, timeout) and its retries with backoff, reconnecting
included. Only the request is ours: encoded by otlp_wire, it is sent as it is by a
stub of our own (_BytesTraceStub), which otel_sdk.SpanSender makes the SDK use.
"""

from __future__ import annotations

from typing import Any

from infergate.telemetry.otel_sdk import SpanSender
from infergate.telemetry.spans import Exporter

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


def request_for(client: Any, payload: bytes) -> Any:
    """Our bytes for our stub. Should an SDK version not make its client from the
    stub we gave it, they are parsed into the SDK's request type instead (the cost
    of a parse and a serialize, about 5 us a request)."""
    if isinstance(client, _BytesTraceStub):
        return payload
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    return ExportTraceServiceRequest.FromString(payload)


class OtlpGrpcExporter(Exporter):
    """Sends encoded ExportTraceServiceRequests through the SDK's OTLP/gRPC exporter."""

    def __init__(self) -> None:
        self._sender = SpanSender(_BytesTraceStub, request_for)

    def export(self, payload: bytes, count: int) -> bool:
        return self._sender.export(payload, count)

    def shutdown(self) -> None:
        self._sender.shutdown()
