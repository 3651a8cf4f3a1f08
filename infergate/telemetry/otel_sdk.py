"""The one place that reaches into the OpenTelemetry SDK's private attributes.

What we rely on, and why:

- ParentBased._root and StaticSampler._decision: how a new trace is sampled, read
  once so that a request needs no sampler call (see sampling.root_bound).
- OTLPSpanExporter's send path below its public export(): _export (the send with
  retries and backoff), the _translate_data and _count_data hooks it calls, _stub
  (what it makes gRPC clients from, at start and on every reconnect), _client and
  _channel. Through them the SDK sends requests we encoded ourselves (see
  otlp_exporter) while keeping its OTEL_EXPORTER_OTLP_* handling and its retries.

None of this is API: any minor release may move it. pyproject.toml pins the
opentelemetry packages below the next minor, and
tests/telemetry/test_otel_sdk_adapter.py fails, naming the attribute and the SDK
version, when an installed SDK no longer has what this module reads. In production
a missing sampler attribute degrades to asking the sampler for every trace, never
to a wrong decision.

Loaded only when tracing is on (the module imports the SDK).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, StaticSampler

if TYPE_CHECKING:
    import grpc

# Makes the client that sends the export requests, from the exporter's channel
# (a TraceServiceStub or a class like it: its Export takes request=, metadata=, timeout=).
ClientFactory = Callable[["grpc.Channel"], Any]
# The request the client in use takes, from our encoded request: (client, bytes) -> request.
RequestFor = Callable[[Any, bytes], Any]


def parent_based_root(sampler: ParentBased) -> Sampler | None:
    """The sampler a ParentBased asks for a trace without a parent; None if unreadable."""
    root = getattr(sampler, "_root", None)
    return root if isinstance(root, Sampler) else None


def static_decision(sampler: StaticSampler) -> Decision | None:
    """ALWAYS_ON's or ALWAYS_OFF's fixed decision; None if unreadable."""
    decision = getattr(sampler, "_decision", None)
    return decision if isinstance(decision, Decision) else None


class SpanSender:
    """The SDK's OTLPSpanExporter sending requests that were encoded elsewhere.

    Its clients are made by `stub`, and each request passes through `request_for`
    with the client that will send it, so a client the SDK made some other way can
    be given a request of its own type.
    """

    def __init__(self, stub: ClientFactory, request_for: RequestFor) -> None:
        # Imported here: it takes about 65 ms (61-74 ms measured), and only the
        # exporter process sends; the gateway process loads this module for the samplers.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import SpanExportResult

        class Sender(OTLPSpanExporter):
            # _export calls these with what we pass it: (encoded request, span count).
            def _translate_data(self, data: Any) -> Any:
                return request_for(self._client, data[0])

            def _count_data(self, data: Any) -> int:
                return int(data[1])

        sender = Sender()  # reads OTEL_EXPORTER_OTLP_*; makes a channel and a client
        sender._stub = stub  # reconnects make their clients from it
        # Replaces the client made from the SDK's stub. (_channel is declared None:
        # __init__ sets it, then _initialize_channel_and_stub makes the channel.)
        sender._client = stub(cast("grpc.Channel", sender._channel))
        self._sender = sender
        self._success = SpanExportResult.SUCCESS

    @property
    def client(self) -> Any:
        """The client the next request goes through."""
        return self._sender._client

    def export(self, request: bytes, count: int) -> bool:
        """Send with the SDK's retries and backoff; True once the receiver took it."""
        return bool(self._sender._export((request, count)) == self._success)  # type: ignore[arg-type]

    def reconnect(self) -> None:
        """A new channel and a client for it, as the SDK makes after UNAVAILABLE."""
        self._sender._initialize_channel_and_stub()  # type: ignore[no-untyped-call]

    def shutdown(self) -> None:
        self._sender.shutdown()
