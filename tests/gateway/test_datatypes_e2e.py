"""Every protocol datatype goes through the server and back unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from infergate.clients import AsyncClient, build_request, parse_response
from infergate.gateway.server import GatewayServer
from infergate.protocol import inference_pb2 as pb
from infergate.settings import Settings
from tests import onnx_models

rng = np.random.default_rng(1)

SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], np.uint8),
    "UINT16": np.array([[0, 7, 65535]], np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1]], np.uint64),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1]], np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1]], np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], np.int64),
    "FP16": rng.standard_normal((2, 3)).astype(np.float16),
    "FP32": rng.standard_normal((2, 3)).astype(np.float32),
    "FP64": rng.standard_normal((2, 3)),
    "BYTES": np.array([[b"", b"hello", "żółw".encode()]], dtype=object),
}


@pytest.fixture
async def typed_gateway(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    repo = tmp_path / "repo"
    for datatype in [*SAMPLES, "BF16"]:
        onnx_models.identity_model(repo / f"id_{datatype.lower()}" / "1" / "model.onnx", datatype)
    server = GatewayServer(Settings(metrics_port=0, model_repository=repo, port=0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.parametrize("datatype", list(SAMPLES))
async def test_raw_round_trip(datatype: str, typed_gateway: GatewayServer) -> None:
    async with AsyncClient(typed_gateway.address) as client:
        sent = SAMPLES[datatype]
        back = (await client.infer(f"id_{datatype.lower()}", {"in": sent}))["out"]
    assert back.shape == sent.shape
    assert back.dtype == sent.dtype or datatype == "BYTES"
    np.testing.assert_array_equal(back, sent)


@pytest.mark.parametrize("datatype", [d for d in SAMPLES if d not in ("FP16",)])
async def test_typed_contents_round_trip(datatype: str, typed_gateway: GatewayServer) -> None:
    from infergate.schema import datatypes

    sent = SAMPLES[datatype]
    request = pb.ModelInferRequest(model_name=f"id_{datatype.lower()}")
    tensor = request.inputs.add(name="in", datatype=datatype, shape=list(sent.shape))
    field = datatypes.from_name(datatype).contents_field
    assert field is not None
    getattr(tensor.contents, field).extend(sent.reshape(-1).tolist())
    import grpc

    from infergate.protocol import inference_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(typed_gateway.address) as channel:
        response = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    np.testing.assert_array_equal(parse_response(response)["out"], sent)


async def test_bf16_travels_as_raw_bits(typed_gateway: GatewayServer) -> None:
    # bfloat16 of 1.0, -2.0, 0.5: the top 16 bits of the float32 patterns.
    bits = (np.array([[1.0, -2.0, 0.5]], np.float32).view(np.uint32) >> 16).astype("<u2")
    request = build_request("id_bf16", {"in": bits})
    request.inputs[0].datatype = "BF16"
    import grpc

    from infergate.protocol import inference_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(typed_gateway.address) as channel:
        response = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert response.outputs[0].datatype == "BF16"
    assert response.raw_output_contents[0] == bits.tobytes()


async def test_a_value_too_wide_for_its_type_is_refused(typed_gateway: GatewayServer) -> None:
    import grpc

    from infergate.protocol import inference_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="id_int8")
    tensor = request.inputs.add(name="in", datatype="INT8", shape=[1, 3])
    tensor.contents.int_contents.extend([1, 2, 300])
    async with grpc.aio.insecure_channel(typed_gateway.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "INT8" in (caught.value.details() or "")


async def test_fp16_sent_typed_is_refused_naming_the_raw_form(typed_gateway: GatewayServer) -> None:
    import grpc

    from infergate.protocol import inference_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="id_fp16")
    tensor = request.inputs.add(name="in", datatype="FP16", shape=[1, 3])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    async with grpc.aio.insecure_channel(typed_gateway.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "can only be sent as raw_input_contents" in (caught.value.details() or "")
