"""The tests' OTLP receiver, counting spans instead of keeping them (bench.otlp_sink)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp

from tests.otlp_receiver import Receiver


@dataclass
class CountingReceiver(Receiver):
    """The tests' OTLP receiver, counting spans instead of keeping them.

    Converting every span to Python objects would take CPU from the gateway that
    shares this machine; counting is enough to prove the export happened.
    """

    span_count: int = 0

    async def Export(
        self,
        request: otlp.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> otlp.ExportTraceServiceResponse:
        self.exports += 1
        self.span_count += sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )
        return otlp.ExportTraceServiceResponse()
