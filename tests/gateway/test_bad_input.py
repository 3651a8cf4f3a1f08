"""Every malformed request gets a clear status naming the problem; the server keeps serving."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np
import pytest

from infergate.clients import build_request
from infergate.gateway.server import GatewayServer
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc

X = np.zeros((2, 64), dtype=np.float32)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def good() -> pb.ModelInferRequest:
    return build_request("digits", {"x": X})


def with_tensor(name: str, datatype: str, shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


def duplicate_input() -> pb.ModelInferRequest:
    request = good()
    request.inputs.add(name="x", datatype="FP32", shape=[2, 64])
    request.raw_input_contents.append(X.tobytes())
    return request


def extra_input() -> pb.ModelInferRequest:
    request = good()
    request.inputs.add(name="z", datatype="FP32", shape=[2, 64])
    request.raw_input_contents.append(X.tobytes())
    return request


def raw_and_typed() -> pb.ModelInferRequest:
    request = good()
    request.inputs[0].contents.fp32_contents.extend([0.0] * 128)
    return request


def typed_count_wrong() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend([0.0] * 63)
    return request


def raw_count_mismatch() -> pb.ModelInferRequest:
    request = good()
    request.raw_input_contents.append(b"")
    return request


def fp16_as_typed() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="x", datatype="FP16", shape=[1, 64])
    return request


def unknown_output() -> pb.ModelInferRequest:
    return build_request("digits", {"x": X}, outputs=["probabilities"])


def batch_too_large() -> pb.ModelInferRequest:
    return build_request("digits", {"x": np.zeros((65, 64), np.float32)})


CASES: dict[str, tuple[Callable[[], pb.ModelInferRequest], grpc.StatusCode, tuple[str, ...]]] = {
    "unknown model": (
        lambda: build_request("nope", {"x": X}),
        grpc.StatusCode.NOT_FOUND,
        ("nope",),
    ),
    "unknown version": (
        lambda: build_request("digits", {"x": X}, version="9"),
        grpc.StatusCode.NOT_FOUND,
        ("'9'",),
    ),
    "missing input": (
        lambda: pb.ModelInferRequest(model_name="digits"),
        INVALID,
        ("needs inputs", "x"),
    ),
    "extra input": (extra_input, INVALID, ("no input 'z'",)),
    "duplicate input": (duplicate_input, INVALID, ("'x'", "more than once")),
    "wrong datatype": (
        lambda: build_request("digits", {"x": X.astype(np.float64)}),
        INVALID,
        ("'x'", "FP32", "FP64"),
    ),
    "unknown datatype": (
        lambda: with_tensor("x", "FLOAT", [1, 64], b"\0" * 256),
        INVALID,
        ("'x'", "FLOAT"),
    ),
    "wrong shape": (
        lambda: build_request("digits", {"x": np.zeros((2, 63), np.float32)}),
        INVALID,
        ("'x'", "[-1, 64]", "[2, 63]"),
    ),
    "wrong rank": (
        lambda: build_request("digits", {"x": np.zeros(64, np.float32)}),
        INVALID,
        ("'x'", "shape"),
    ),
    "negative dim": (lambda: with_tensor("x", "FP32", [-1, 64], b""), INVALID, ("'x'", "negative")),
    "byte length mismatch": (
        lambda: with_tensor("x", "FP32", [1, 64], b"\0" * 255),
        INVALID,
        ("'x'", "255", "256"),
    ),
    "raw and typed contents": (raw_and_typed, INVALID, ("'x'", "both")),
    "typed count mismatch": (typed_count_wrong, INVALID, ("'x'", "63", "64")),
    "raw entries vs inputs": (raw_count_mismatch, INVALID, ("raw_input_contents", "2 entries")),
    # The model's spec is checked before contents (FP16 sent typed: test_datatypes_e2e).
    "fp16 to an fp32 input": (fp16_as_typed, INVALID, ("'x'", "FP32", "FP16")),
    "unknown output": (unknown_output, INVALID, ("probabilities",)),
    "batch above max_batch_size": (batch_too_large, INVALID, ("'x'", "65", "64")),
    "zero batch": (
        lambda: build_request("digits", {"x": np.zeros((0, 64), np.float32)}),
        INVALID,
        ("batch size 0",),
    ),
}


@pytest.fixture
async def stub(gateway: GatewayServer) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_request_is_refused_clearly_and_server_keeps_serving(
    case: str, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    make, code, fragments = CASES[case]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(make())
    assert caught.value.code() == code, caught.value.details()
    details = caught.value.details() or ""
    for fragment in fragments:
        assert fragment in details, details
    response = await stub.ModelInfer(good())
    assert len(response.raw_output_contents[0]) == 2 * 10 * 4


async def test_message_over_the_size_limit_is_resource_exhausted(repository) -> None:  # type: ignore[no-untyped-def]
    from infergate.settings import Settings

    server = GatewayServer(
        Settings(metrics_port=0, model_repository=repository, port=0, max_receive_message_mb=1)
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            huge = build_request("digits", {"x": np.zeros((8192, 64), np.float32)})  # 2 MiB
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ModelInfer(huge)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await stub.ModelInfer(good())).raw_output_contents
    finally:
        await server.stop()
