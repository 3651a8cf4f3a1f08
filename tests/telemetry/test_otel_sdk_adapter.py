"""What infergate/telemetry/otel_sdk.py reads of the OpenTelemetry SDK's private
attributes is still there, and still does what we rely on, in the installed SDK.

Run against the real SDK (nothing of it is mocked). A failure names the attribute
and the installed versions: adapt otel_sdk.py to that SDK, or keep the
opentelemetry pins in pyproject.toml below it.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind

from infergate.telemetry import otlp_wire
from infergate.telemetry.otel_sdk import SpanSender, parent_based_root, static_decision
from infergate.telemetry.otlp_exporter import _BytesTraceStub, request_for
from infergate.telemetry.sampling import root_bound
from tests.otlp_receiver import Receiver

INSTALLED = ", ".join(
    f"{name} {version(name)}"
    for name in (
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-grpc",
    )
)


def broken(what: str) -> str:
    return (
        f"{what}: infergate/telemetry/otel_sdk.py relies on it, and the installed SDK "
        f"({INSTALLED}) changed it. Adapt otel_sdk.py to this SDK, or keep the "
        "opentelemetry pins in pyproject.toml below this version."
    )


def private(owner: object, name: str) -> Any:
    """owner.name, which must exist; owner is a class or an instance."""
    label = owner.__name__ if isinstance(owner, type) else type(owner).__name__
    assert hasattr(owner, name), broken(f"{label}.{name} is gone")
    return getattr(owner, name)


# --- samplers -----------------------------------------------------------------


def test_parent_based_keeps_its_root_sampler_in__root() -> None:
    ratio = TraceIdRatioBased(0.25)
    sampler = ParentBased(ratio)
    assert private(sampler, "_root") is ratio, broken("ParentBased._root is not its root")
    assert parent_based_root(sampler) is ratio, broken("ParentBased._root is unreadable")
    # The bound we compute is the SDK's: a quarter of the 64-bit id space.
    assert ratio.bound == TraceIdRatioBased.get_bound_for_rate(0.25) == 1 << 62
    assert root_bound(sampler) == 1 << 62, broken("ParentBased._root gave no bound")
    # And the SDK decides a trace without a parent by it: sampled just under the bound.
    for trace_id, sampled in [((1 << 62) - 1, True), (1 << 62, False), (7 << 64, True)]:
        result = sampler.should_sample(None, trace_id, "rpc", SpanKind.SERVER)
        assert result.decision.is_sampled() == sampled, broken(  # type: ignore[no-untyped-call]
            f"ParentBased no longer decides a new trace by its root ({trace_id:#x})"
        )


@pytest.mark.parametrize(
    ("sampler", "root"),
    [(DEFAULT_ON, ALWAYS_ON), (DEFAULT_OFF, ALWAYS_OFF)],
    ids=["parentbased_always_on", "parentbased_always_off"],
)
def test_the_standard_parent_based_samplers_have_a_reachable_root(
    sampler: ParentBased, root: StaticSampler
) -> None:
    assert parent_based_root(sampler) is root, broken(f"{type(sampler).__name__}._root")
    ratio = ParentBasedTraceIdRatio(0.1)
    assert isinstance(parent_based_root(ratio), TraceIdRatioBased), broken(
        "ParentBasedTraceIdRatio._root is not its TraceIdRatioBased"
    )


@pytest.mark.parametrize(
    ("sampler", "decision", "bound"),
    [(ALWAYS_ON, Decision.RECORD_AND_SAMPLE, 1 << 64), (ALWAYS_OFF, Decision.DROP, 0)],
    ids=["always_on", "always_off"],
)
def test_static_samplers_keep_their_decision_in__decision(
    sampler: StaticSampler, decision: Decision, bound: int
) -> None:
    assert private(sampler, "_decision") is decision, broken("StaticSampler._decision")
    assert static_decision(sampler) is decision, broken("StaticSampler._decision is unreadable")
    assert root_bound(sampler) == bound
    result = sampler.should_sample(None, 1, "rpc", SpanKind.SERVER)
    assert result.decision is decision, broken("StaticSampler no longer decides by _decision")


# --- the OTLP/gRPC span exporter ------------------------------------------------


def point_at(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the exporter's channel points; these tests never dial it (channels connect lazily)."""
    point_at(9, monkeypatch)


class Client:
    """A client of our own, made from the exporter's channel; records its Export calls."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.calls: list[dict[str, Any]] = []

    def Export(self, **call: Any) -> None:
        self.calls.append(call)


@pytest.mark.parametrize(
    "name", ["_export", "_translate_data", "_count_data", "_initialize_channel_and_stub"]
)
def test_the_exporter_has_the_methods_we_call_or_override(name: str) -> None:
    assert callable(private(OTLPSpanExporter, name)), broken(f"OTLPSpanExporter.{name}")


def test_the_exporter_makes_its_client_from__stub_and__channel(endpoint: None) -> None:
    exporter = OTLPSpanExporter()
    stub, channel, client = (private(exporter, n) for n in ("_stub", "_channel", "_client"))
    assert stub is TraceServiceStub, broken("OTLPSpanExporter._stub is not TraceServiceStub")
    assert isinstance(channel, grpc.Channel), broken("OTLPSpanExporter._channel")
    assert isinstance(client, TraceServiceStub), broken("OTLPSpanExporter._client")
    # A reconnect (after UNAVAILABLE) makes a new channel and a client from _stub.
    exporter._stub = Client
    exporter._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
    made = exporter._client
    assert isinstance(made, Client), broken("a reconnect no longer makes its client from _stub")
    assert made.channel is exporter._channel, broken("a reconnect's client is not on _channel")
    exporter.shutdown()


def test__export_sends_what__translate_data_makes_through__client(endpoint: None) -> None:
    translated: list[object] = []
    counted: list[object] = []

    class Sender(OTLPSpanExporter):
        def _translate_data(self, data: Any) -> Any:
            translated.append(data)
            return b"request"

        def _count_data(self, data: Any) -> int:
            counted.append(data)
            return 3

    sender = Sender()
    client = Client(private(sender, "_channel"))
    sender._client = client  # type: ignore[assignment]
    data = (b"ours", 3)
    result = sender._export(data)  # type: ignore[arg-type]
    assert result == SpanExportResult.SUCCESS, broken("OTLPSpanExporter._export's result")
    assert translated == [data], broken("_export no longer passes its data to _translate_data")
    assert counted == [data], broken("_export no longer passes its data to _count_data")
    assert [call.get("request") for call in client.calls] == [b"request"], broken(
        "_export no longer sends _translate_data's request through _client.Export(request=)"
    )
    sender.shutdown()


async def test_the_adapter_sends_our_bytes_to_a_real_receiver(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(receiver.port, monkeypatch)
    sender = SpanSender(_BytesTraceStub, request_for)
    assert isinstance(sender.client, _BytesTraceStub), broken("OTLPSpanExporter._client")
    span = otlp_wire.span(
        trace_id=0xAB << 120,
        span_id=0xCD,
        parent_span_id=0,
        name="through _export",
        kind=2,
        start_ns=1_000,
        end_ns=2_000,
        attributes_bytes=b"",
    )
    request = otlp_wire.export_request(
        otlp_wire.resource({"service.name": "svc"}), otlp_wire.scope("infergate", ""), [span]
    )
    # The SDK's send blocks; the receiver serves on this loop.
    assert await asyncio.to_thread(sender.export, request, 1), broken("OTLPSpanExporter._export")
    await receiver.wait_for(1)
    assert [s.name for s in receiver.spans] == ["through _export"]
    sender.shutdown()
    assert not sender.export(request, 1), broken("_export after shutdown")
