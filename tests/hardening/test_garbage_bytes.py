"""Request bytes that are not a protobuf message, sent to every kind of method of a
live gateway: INVALID_ARGUMENT naming the parse failure, never grpc's UNKNOWN, and
the gateway goes on serving."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from tests.cli_gateway import CliGateway, digits_with_admin_token
from tests.hardening.test_fuzz_inference import MAX_DETAILS

TOKEN = "garbage-bytes-token-0123456789abcdef"
METADATA = (("authorization", f"Bearer {TOKEN}"),)
CORRUPT = b"\xff\xff\xff"  # a field tag whose varint never ends
UNARY = [
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelMetadata",
    "/inference.GRPCInferenceService/ServerLive",
    "/infergate.admin.v1.ModelAdmin/DescribeModel",
    "/grpc.health.v1.Health/Check",
]
STREAMING = [
    "/inference.GRPCInferenceService/ModelStreamInfer",
    "/infergate.admin.v1.ModelAdmin/RegisterModel",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliGateway]:
    with digits_with_admin_token(tmp_path_factory.mktemp("garbage-bytes"), TOKEN) as gateway:
        yield gateway


def raw(data: bytes) -> bytes:
    return data


def good_request_is_answered(channel: grpc.Channel) -> None:
    good = pb.ModelInferRequest(model_name="digits")
    good.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    good.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
    response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(good, timeout=20)
    assert response.outputs[0].shape == [1, 10]


@pytest.mark.parametrize("method", UNARY)
def test_a_request_that_does_not_parse_is_invalid_argument(live: CliGateway, method: str) -> None:
    with grpc.insecure_channel(live.url) as channel:
        call = channel.unary_unary(method, request_serializer=raw, response_deserializer=raw)
        with pytest.raises(grpc.RpcError) as refused:
            call(CORRUPT, metadata=METADATA, timeout=20)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "the request's bytes do not parse" in refused.value.details()
        good_request_is_answered(channel)


def test_a_server_stream_whose_request_does_not_parse_is_invalid_argument(
    live: CliGateway,
) -> None:
    with grpc.insecure_channel(live.url) as channel:
        call = channel.unary_stream(
            "/grpc.health.v1.Health/Watch", request_serializer=raw, response_deserializer=raw
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(call(CORRUPT, metadata=METADATA, timeout=20))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "the request's bytes do not parse" in refused.value.details()


@pytest.mark.parametrize("method", STREAMING)
def test_a_streamed_message_that_does_not_parse_is_invalid_argument(
    live: CliGateway, method: str
) -> None:
    with grpc.insecure_channel(live.url) as channel:
        call = channel.stream_stream(method, request_serializer=raw, response_deserializer=raw)
        with pytest.raises(grpc.RpcError) as refused:
            list(call(iter([CORRUPT]), metadata=METADATA, timeout=20))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "the request's bytes do not parse" in refused.value.details()
        good_request_is_answered(channel)


def test_made_up_methods_are_unimplemented_and_not_remembered(live: CliGateway) -> None:
    with grpc.insecure_channel(live.url) as channel:
        for i in range(3):
            call = channel.unary_unary(
                f"/inference.GRPCInferenceService/NoSuchMethod{i}",
                request_serializer=raw,
                response_deserializer=raw,
            )
            with pytest.raises(grpc.RpcError) as refused:
                call(b"", metadata=METADATA, timeout=20)
            assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(UNARY), st.binary(max_size=200))
def test_any_bytes_get_a_documented_status(live: CliGateway, method: str, data: bytes) -> None:
    with grpc.insecure_channel(live.url) as channel:
        call = channel.unary_unary(method, request_serializer=raw, response_deserializer=raw)
        try:
            call(data, metadata=METADATA, timeout=20)
        except grpc.RpcError as exc:
            assert exc.code() in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}, (
                exc.code(),
                exc.details(),
            )
            assert exc.details() and len(exc.details()) <= MAX_DETAILS


def test_the_hot_methods_get_no_wrapper() -> None:
    # A wrapper coroutine per call cost about 1% of ModelInfer's instructions, and a
    # re-yielding one would cost the stream per message: these answer it themselves.
    from collections import namedtuple

    from infergate.gateway.request_decoding import LenientDecoding, Undecodable
    from infergate.gateway.servicers.inference import InferenceServicer

    servicer = object.__new__(InferenceServicer)  # only its methods are looked up
    handler = LenientDecoding(_generic(servicer))
    details = namedtuple("details", "method invocation_metadata")
    unary = handler.service(details("/inference.GRPCInferenceService/ModelInfer", ()))
    assert unary is not None and unary.unary_unary == servicer.ModelInfer
    assert type(unary.request_deserializer(CORRUPT)) is Undecodable
    streamed = handler.service(details("/inference.GRPCInferenceService/ModelStreamInfer", ()))
    assert streamed is not None and streamed.stream_stream == servicer.ModelStreamInfer


def test_made_up_method_names_take_no_memory() -> None:
    # The wrapped handlers are kept per method: only for methods the service has, or
    # a client could grow the table with every name it makes up.
    from collections import namedtuple

    from infergate.gateway.request_decoding import LenientDecoding
    from infergate.gateway.servicers.inference import InferenceServicer

    handler = LenientDecoding(_generic(object.__new__(InferenceServicer)))
    details = namedtuple("details", "method invocation_metadata")
    for i in range(100):
        assert handler.service(details(f"/inference.GRPCInferenceService/X{i}", ())) is None
    assert handler.service(details("/inference.GRPCInferenceService/ServerLive", ()))
    assert len(handler._handlers) == 1


def _generic(servicer: object) -> grpc.GenericRpcHandler:
    """The generated add function's generic handler for `servicer`."""
    captured: list[grpc.GenericRpcHandler] = []

    class Server:
        def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler]) -> None:
            captured.extend(handlers)

        def add_registered_method_handlers(self, *_: object) -> None:
            pass

    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, Server())
    return captured[0]
