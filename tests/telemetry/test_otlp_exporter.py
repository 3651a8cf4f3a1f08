"""OtlpGrpcExporter: the SDK's exporter sending our encoded requests to a real receiver,
as they are, through a reconnect, and parsed where the SDK made its own client."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from infergate.telemetry import otlp_wire
from infergate.telemetry.otel_sdk import SpanSender
from infergate.telemetry.otlp_exporter import OtlpGrpcExporter, _BytesTraceStub, request_for
from tests.otlp_receiver import Receiver


def payload(name: str) -> bytes:
    span = otlp_wire.span(
        trace_id=0xAB << 120,
        span_id=0xCD,
        parent_span_id=0,
        name=name,
        kind=2,
        start_ns=1_000,
        end_ns=2_000,
        attributes_bytes=otlp_wire.attributes(9, {"infergate.model": "digits"}),
    )
    return otlp_wire.export_request(
        otlp_wire.resource({"service.name": "svc"}), otlp_wire.scope("infergate", ""), [span]
    )


@pytest.fixture
def endpoint(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")


@pytest.fixture
def exporter(endpoint: None) -> OtlpGrpcExporter:
    return OtlpGrpcExporter()


async def send(exporter: OtlpGrpcExporter | SpanSender, name: str) -> bool:
    # The SDK's export blocks; the receiver serves on this loop.
    return await asyncio.to_thread(exporter.export, payload(name), 1)


async def test_our_bytes_are_sent_as_they_are(
    exporter: OtlpGrpcExporter, receiver: Receiver
) -> None:
    assert isinstance(exporter._sender.client, _BytesTraceStub)
    assert await send(exporter, "first")
    await receiver.wait_for(1)
    [span] = receiver.spans
    assert (span.name, span.service_name) == ("first", "svc")
    assert span.attributes == {"infergate.model": "digits"}
    exporter.shutdown()


async def test_a_reconnect_keeps_sending_bytes(
    exporter: OtlpGrpcExporter, receiver: Receiver
) -> None:
    # What the SDK does after an UNAVAILABLE error: a new channel and a client from _stub.
    exporter._sender.reconnect()
    assert isinstance(exporter._sender.client, _BytesTraceStub)
    assert await send(exporter, "after reconnect")
    await receiver.wait_for(1)
    assert [s.name for s in receiver.spans] == ["after reconnect"]
    exporter.shutdown()


async def test_a_client_the_sdk_made_gets_a_parsed_request(
    endpoint: None, receiver: Receiver
) -> None:
    # As if the SDK had made its client from its own stub, not the one we gave it.
    sender = SpanSender(TraceServiceStub, request_for)
    assert isinstance(sender.client, TraceServiceStub)
    assert await send(sender, "parsed")
    await receiver.wait_for(1)
    assert [s.name for s in receiver.spans] == ["parsed"]
    sender.shutdown()
