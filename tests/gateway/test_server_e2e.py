"""End to end through the real gRPC server on loopback, with real stubs and our client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from infergate.clients import AsyncClient, build_request
from infergate.gateway.server import GatewayServer
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc


@pytest.fixture
async def stub(gateway: GatewayServer) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture
async def client(gateway: GatewayServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(gateway.address) as c:
        yield c


def reference(repository: Path, model: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(
        str(repository / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return list(session.run(None, inputs))


async def test_health_metadata_and_readiness(
    gateway: GatewayServer, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    meta = await stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "infergate" and "statistics" in meta.extensions
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="digits"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="nope"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="digits", version="7"))).ready

    model = await stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"))
    assert model.platform == "onnxruntime_onnx" and list(model.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("x", "FP32", [-1, 64])]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [("y", "FP32", [-1, 10])]

    config = (await stub.ModelConfig(pb.ModelConfigRequest(name="digits"))).config
    assert config.max_batch_size == 64 and config.backend == ""  # not pinned: every backend
    assert [i.name for i in config.input] == ["x"] and list(config.input[0].dims) == [64]


async def test_standard_health_service_and_reflection(gateway: GatewayServer) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in reflect.ServerReflectionInfo(iter([request]))]
        names = {s.name for s in replies[0].list_services_response.service}
        assert names == {
            "inference.GRPCInferenceService",
            "infergate.admin.v1.ModelAdmin",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }


async def test_derived_config_for_a_model_without_config(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    config = (await stub.ModelConfig(pb.ModelConfigRequest(name="addsub"))).config
    assert config.max_batch_size == 32  # the default for derived configs
    assert [i.name for i in config.input] == ["a", "b"]
    assert [list(i.dims) for i in config.input] == [[4], [4]]
    assert [o.name for o in config.output] == ["sum", "diff"]


async def test_infer_matches_onnxruntime_in_process(client: AsyncClient, repository: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((5, 64), dtype=np.float32)
    outputs = await client.infer("digits", {"x": x})
    (expected,) = reference(repository, "digits", {"x": x})
    np.testing.assert_allclose(outputs["y"], expected, rtol=1e-6, atol=1e-6)

    image = rng.standard_normal((2, 3, 32, 32), dtype=np.float32)
    outputs = await client.infer("cnn", {"x": image}, version="1")
    np.testing.assert_allclose(
        outputs["y"], reference(repository, "cnn", {"x": image})[0], rtol=1e-5, atol=1e-5
    )


async def test_requested_outputs_and_id_come_back(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones((2, 4), dtype=np.float32)
    request = build_request("addsub", {"a": a, "b": b}, outputs=["diff"], request_id="req-42")
    response = await stub.ModelInfer(request)
    assert response.id == "req-42" and response.model_version == "1"
    assert [o.name for o in response.outputs] == ["diff"]
    diff = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(diff, a - b)


async def test_typed_contents_are_accepted(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(model_name="addsub")
    for name, values in (("a", [1.0, 2, 3, 4]), ("b", [0.5, 0.5, 0.5, 0.5])):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        tensor.contents.fp32_contents.extend(values)
    response = await stub.ModelInfer(request)
    total = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
    np.testing.assert_array_equal(total, [1.5, 2.5, 3.5, 4.5])


async def test_stream_answers_every_request_and_errors_stay_on_the_stream(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    x = np.zeros((1, 64), dtype=np.float32)
    requests = [build_request("digits", {"x": x}, request_id=f"r{i}") for i in range(5)]
    bad = build_request("digits", {"x": np.zeros((1, 63), np.float32)}, request_id="bad")
    replies = [r async for r in stub.ModelStreamInfer(iter([*requests[:2], bad, *requests[2:]]))]
    by_id = {r.infer_response.id: r for r in replies}
    assert set(by_id) == {"r0", "r1", "r2", "r3", "r4", "bad"}
    assert "shape" in by_id["bad"].error_message
    assert all(not by_id[f"r{i}"].error_message for i in range(5))
    assert len(by_id["r3"].infer_response.raw_output_contents[0]) == 10 * 4


async def test_statistics_count_requests_in_triton_layout(
    client: AsyncClient, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    for rows in (1, 3):
        await client.infer("digits", {"x": np.zeros((rows, 64), np.float32)})
    with pytest.raises(Exception):  # noqa: B017 - any refusal; counted as a failure
        await client.infer("digits", {"x": np.zeros((1, 65), np.float32)})
    stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="digits"))
    (digits,) = stats.model_stats
    assert digits.version == "1"
    assert digits.inference_stats.success.count == 2
    assert digits.inference_count == 4 and digits.execution_count == 2
    assert digits.inference_stats.queue.count == 2
    assert digits.inference_stats.compute_infer.count == 2
    assert digits.inference_stats.compute_infer.ns > 0
    assert {b.batch_size for b in digits.batch_stats} == {1, 3}
    assert digits.last_inference > 0
    every = await stub.ModelStatistics(pb.ModelStatisticsRequest())
    assert {s.name for s in every.model_stats} == {"digits", "cnn", "addsub"}


async def test_repository_index_lists_models_with_state(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
    assert {(m.name, m.version, m.state) for m in index.models} == {
        ("addsub", "1", "READY"),
        ("cnn", "1", "READY"),
        ("digits", "1", "READY"),
    }
