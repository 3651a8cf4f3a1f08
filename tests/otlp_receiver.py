"""A real OTLP/gRPC trace receiver on loopback, collecting what the gateway exports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, object]
    links: list[tuple[str, str]]  # (trace id, span id)
    status_code: int
    service_name: str


def _value(v: object) -> object:
    kind = v.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(v, kind) if kind else None


@dataclass
class Receiver(otlp_grpc.TraceServiceServicer):
    spans: list[ReceivedSpan] = field(default_factory=list)
    # span id -> (start, end) in ns since the epoch
    times: dict[str, tuple[int, int]] = field(default_factory=dict)
    exports: int = 0
    port: int = 0
    _server: grpc.aio.Server | None = None

    async def Export(
        self, request: otlp.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        self.exports += 1
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(_convert(span, str(resource.get("service.name", ""))))
                    self.times[span.span_id.hex()] = (
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                    )
        return otlp.ExportTraceServiceResponse()

    async def start(self) -> None:
        self._server = grpc.aio.server()
        otlp_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.spans) < count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)


def _convert(span: trace_pb2.Span, service: str) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        attributes={a.key: _value(a.value) for a in span.attributes},
        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
        status_code=span.status.code,
        service_name=service,
    )
