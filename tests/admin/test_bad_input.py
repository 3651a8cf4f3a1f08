"""Bad registrations: each gets a clear status, leaves nothing behind, and the gateway
keeps serving what it served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.clients import AsyncClient
from infergate.clients.admin_client import AdminError, Artifact, AsyncAdminClient
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import admin_pb2_grpc as apb_grpc
from infergate.settings import Settings
from tests.admin.conftest import TOKEN, Served, start
from tests.admin.payloads import DIGITS_ONNX, scale_model, sha256


def assert_untouched(served: Served, *names: str) -> None:
    """No trace of a failed registration: no model folder, nothing staged."""
    for name in names:
        assert not (served.repo / name).exists(), name
    staging = served.repo / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


async def assert_still_serving(client: AsyncClient) -> None:
    y = (await client.infer("digits", {"x": np.zeros((1, 64), np.float32)}))["y"]
    assert y.shape == (1, 10)


async def refused(call: object) -> AdminError:
    assert hasattr(call, "__await__")
    with pytest.raises(AdminError) as error:
        await call  # type: ignore[misc]
    return error.value


async def test_a_wrong_checksum_is_data_loss(
    served: Served, admin: AsyncAdminClient, client: AsyncClient
) -> None:
    real = Artifact.from_path("model.onnx", DIGITS_ONNX)
    lying = Artifact("model.onnx", DIGITS_ONNX, real.size, "0" * 64)
    error = await refused(admin.register("mnist", [lying]))
    assert error.code is grpc.StatusCode.DATA_LOSS
    assert "SHA-256" in error.message and real.sha256 in error.message
    assert_untouched(served, "mnist")
    await assert_still_serving(client)


async def test_a_corrupt_onnx_file_is_refused_and_the_old_version_keeps_serving(
    served: Served, admin: AsyncAdminClient, client: AsyncClient, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a model" * 100)
    error = await refused(admin.register("broken", {"model.onnx": corrupt}))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "onnxruntime could not load" in error.message
    assert_untouched(served, "broken")
    assert "broken" not in {m.name for m in await admin.list_models()}

    # As a new version of a serving model: version 1 goes on, with the failure noted.
    error = await refused(admin.register("digits", {"model.onnx": corrupt}))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert not (served.repo / "digits" / "2").exists()
    await assert_still_serving(client)
    described = await admin.describe("digits")
    assert described.serving_version == "1" and described.state == "READY"
    assert "last load failed" in described.reason


async def test_a_model_that_fails_its_warm_up_is_refused(
    served: Served, admin: AsyncAdminClient, tmp_path: Path
) -> None:
    """Loads, but its config does not match the artifact: refused before any traffic."""
    from infergate.gateway.core.repository import parse_config

    config = parse_config(
        'max_batch_size: 8 input [{ name: "x" data_type: TYPE_FP32 dims: [ 5 ] }]', "bad"
    )
    model = scale_model(tmp_path / "scale.onnx", 2.0)
    error = await refused(admin.register("scale", {"model.onnx": model}, config))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert_untouched(served, "scale")


@pytest.mark.parametrize(
    "name",
    ["../escape", "..", "a/b", "/abs", ".hidden", "", "x" * 200, "bad name", "a\n", "a\0", "²"],
)
async def test_bad_model_names_are_invalid(
    served: Served, admin: AsyncAdminClient, name: str
) -> None:
    error = await refused(admin.register(name, {"model.onnx": DIGITS_ONNX}))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid model name" in error.message
    assert sorted(p.name for p in served.repo.parent.iterdir()) == ["repo"]
    assert_untouched(served)


@pytest.mark.parametrize(
    "filename",
    ["../model.onnx", "sub/model.onnx", ".model.onnx", "config.pbtxt", "a\\b", "", "model.onnx\n"],
)
async def test_bad_artifact_names_are_invalid(
    served: Served, admin: AsyncAdminClient, filename: str
) -> None:
    artifact = Artifact.from_path("model.onnx", DIGITS_ONNX)
    renamed = Artifact(filename, artifact.path, artifact.size, artifact.sha256)
    error = await refused(admin.register("mnist", [renamed]))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert_untouched(served, "mnist")


@pytest.mark.parametrize("version", ["7\n", "07", "0", "-1", "1.0", "\u0661", "9" * 19, " 7"])
async def test_bad_versions_are_invalid_and_leave_nothing(
    served: Served, admin: AsyncAdminClient, version: str
) -> None:
    """A version with a trailing newline was once accepted: served, written as a folder
    named "7\\n", and UNAVAILABLE after a restart."""
    error = await refused(admin.register("mnist", {"model.onnx": DIGITS_ONNX}, version=version))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "not allowed" in error.message
    assert_untouched(served, "mnist")


async def test_an_oversized_artifact_is_resource_exhausted(repo: Path, tmp_path: Path) -> None:
    server = await start(repo, max_artifact_mb=1)
    try:
        big = tmp_path / "big.onnx"
        big.write_bytes(b"\0" * (1024 * 1024 + 1))
        async with AsyncAdminClient(server.address, TOKEN) as admin:
            error = await refused(admin.register("big", {"model.onnx": big}))
        assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-artifact-mb" in error.message
        # Refused on the header's announced size: nothing was even staged.
        assert sorted(p.name for p in repo.iterdir()) == ["digits"]
    finally:
        await server.stop()


def _stream(header: apb.RegisterModelHeader, *chunks: bytes) -> Iterator[apb.RegisterModelRequest]:
    yield apb.RegisterModelRequest(header=header)
    for data in chunks:
        yield apb.RegisterModelRequest(chunk=apb.ArtifactChunk(filename="model.onnx", data=data))


async def _raw_register(
    served: Served, messages: Iterator[apb.RegisterModelRequest]
) -> grpc.StatusCode:
    async def requests() -> AsyncIterator[apb.RegisterModelRequest]:
        for message in messages:
            yield message

    async with grpc.aio.insecure_channel(served.address) as channel:
        stub = apb_grpc.ModelAdminStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.RegisterModel(
                requests(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10
            )
    return error.value.code()


async def test_streams_that_break_the_protocol_are_invalid(
    served: Served, client: AsyncClient
) -> None:
    data = DIGITS_ONNX.read_bytes()
    header = apb.RegisterModelHeader(name="mnist")
    header.artifacts.add(filename="model.onnx", sha256=sha256(DIGITS_ONNX), size=len(data))
    cases = {
        "more bytes than announced": _stream(header, data, b"extra"),
        "fewer bytes than announced": _stream(header, data[:100]),
        "no header": iter([apb.RegisterModelRequest(chunk=apb.ArtifactChunk(data=b"x"))]),
        "two headers": iter([apb.RegisterModelRequest(header=header)] * 2),
        "nothing at all": iter([]),
    }
    for what, messages in cases.items():
        assert await _raw_register(served, messages) is grpc.StatusCode.INVALID_ARGUMENT, what
    unannounced = apb.RegisterModelHeader(name="mnist")
    unannounced.artifacts.add(filename="model.tflite", sha256="0" * 64, size=4)
    assert (
        await _raw_register(served, _stream(unannounced, b"abcd"))
        is grpc.StatusCode.INVALID_ARGUMENT
    )
    assert_untouched(served, "mnist")
    await assert_still_serving(client)


async def test_unknown_models_are_not_found(admin: AsyncAdminClient) -> None:
    for call in (admin.describe("nope"), admin.unregister("nope")):
        assert (await refused(call)).code is grpc.StatusCode.NOT_FOUND


async def test_registering_without_a_repository_fails_the_precondition() -> None:
    from infergate.gateway.server import GatewayServer
    from tests.admin.conftest import gateway_backends

    settings = Settings(port=0, metrics_port=0, shutdown_grace_s=1, admin_token=TOKEN)
    server = GatewayServer(settings, backends=gateway_backends())
    await server.start()
    try:
        async with AsyncAdminClient(server.address, TOKEN) as admin:
            error = await refused(admin.register("mnist", {"model.onnx": DIGITS_ONNX}))
            assert error.code is grpc.StatusCode.FAILED_PRECONDITION
            assert "--model-repository" in error.message
            assert await admin.list_models() == []
    finally:
        await server.stop()
