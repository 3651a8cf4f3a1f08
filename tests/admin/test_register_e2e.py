"""Registering models and new versions over the admin RPC, end to end through gRPC."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from infergate.clients import AsyncClient, InferenceError
from infergate.clients.admin_client import AdminError, AsyncAdminClient
from infergate.gateway.core.repository import parse_config
from infergate.protocol import model_config_pb2 as mc
from tests.admin.conftest import TOKEN, Served, gateway_backends, start, wait_until
from tests.admin.payloads import (
    DIGITS_CONFIG,
    DIGITS_ONNX,
    fake_model,
    row,
    scale_model,
    sha256,
)
from tests.fake_backend import FakeBackend


def digits_reference(x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(DIGITS_ONNX), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


async def test_a_registered_model_answers_and_lives_in_the_repository(
    served: Served, admin: AsyncAdminClient, client: AsyncClient
) -> None:
    response = await admin.register("mnist", {"model.onnx": DIGITS_ONNX})
    assert (response.name, response.version) == ("mnist", "1")
    assert (response.backend, response.device) == ("onnxruntime", "cpu")
    assert response.load_ms > 0 and not response.replaced_versions

    x = np.random.default_rng(1).random((3, 64), dtype=np.float32)
    y = (await client.infer("mnist", {"x": x}))["y"]
    np.testing.assert_allclose(y, digits_reference(x), rtol=1e-5, atol=1e-6)

    stored = served.repo / "mnist" / "1" / "model.onnx"
    assert stored.read_bytes() == DIGITS_ONNX.read_bytes()
    assert not (served.repo / "mnist" / "config.pbtxt").exists()  # derived, as given
    assert not any((served.repo / ".staging").iterdir())

    listed = {m.name: m for m in await admin.list_models()}
    assert set(listed) == {"digits", "mnist"}
    assert listed["mnist"].state == "READY" and listed["mnist"].serving_version == "1"
    assert list(listed["mnist"].versions) == ["1"]

    described = await admin.describe("mnist")
    (version,) = described.versions
    assert version.state == "READY"
    assert [(a.filename, a.sha256, a.size) for a in version.artifacts] == [
        ("model.onnx", sha256(DIGITS_ONNX), DIGITS_ONNX.stat().st_size)
    ]
    (arm,) = version.arms
    assert (arm.backend, arm.device) == ("onnxruntime", "cpu")
    assert arm.latency.batches == 1 and arm.latency.mean_batch_ms > 0
    assert version.statistics.success == 1 and version.statistics.inference_count == 3
    assert version.queue.depth == 0
    assert described.config.max_batch_size == 32  # derived from the artifact


async def test_a_config_and_an_explicit_version_are_kept(
    served: Served, admin: AsyncAdminClient, client: AsyncClient
) -> None:
    config = parse_config(DIGITS_CONFIG, "digits config")
    config.name = ""  # the registration names the model
    config.response_cache.enable = True
    response = await admin.register("mnist", {"model.onnx": DIGITS_ONNX}, config, version="7")
    assert response.version == "7"
    on_disk = parse_config((served.repo / "mnist" / "config.pbtxt").read_text(), "written")
    assert on_disk.name == "mnist" and on_disk.max_batch_size == 64
    assert on_disk.response_cache.enable
    served_config = served.server.core.model("mnist").config
    assert served_config.max_batch_size == 64 and served_config.response_cache.enable

    with pytest.raises(AdminError) as refused:
        await admin.register("mnist", {"model.onnx": DIGITS_ONNX}, version="7")
    assert refused.value.code is grpc.StatusCode.ALREADY_EXISTS
    # Without a version, the next one; without a config, the model's config stays.
    response = await admin.register("mnist", {"model.onnx": DIGITS_ONNX})
    assert response.version == "8" and list(response.replaced_versions) == ["7"]
    assert served.server.core.model("mnist").config.max_batch_size == 64

    with pytest.raises(AdminError) as mismatch:
        await admin.register("other", {"model.onnx": DIGITS_ONNX}, mc.ModelConfig(name="mnist"))
    assert mismatch.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "'mnist'" in mismatch.value.message


async def test_a_new_version_takes_over_without_a_failed_request(
    served: Served, admin: AsyncAdminClient, client: AsyncClient, tmp_path: Path
) -> None:
    """Concurrent load runs across the switch: every request succeeds, each answered by
    one version or the other, and once the registration returns, by the new one only."""
    await admin.register("scale", {"model.onnx": scale_model(tmp_path / "v1.onnx", 1.0)})
    v2 = scale_model(tmp_path / "v2.onnx", 2.0)
    answers: list[tuple[float, float]] = []  # (scale seen, loop time)
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def load(worker: int) -> None:
        loop = asyncio.get_running_loop()
        value = float(worker + 1)
        while not stop.is_set():
            try:
                y = (await client.infer("scale", {"x": row(value)}))["y"]
            except InferenceError as exc:
                failures.append(exc)
                continue
            answers.append((float(y[0, 0]) / value, loop.time()))

    workers = [asyncio.create_task(load(i)) for i in range(6)]
    try:
        await asyncio.sleep(0.3)
        response = await admin.register("scale", {"model.onnx": v2})
        switched_at = asyncio.get_running_loop().time()
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert failures == []
    assert response.version == "2" and list(response.replaced_versions) == ["1"]
    scales = {scale for scale, _ in answers}
    assert scales == {1.0, 2.0}
    after = [scale for scale, at in answers if at > switched_at + 0.05]
    assert after and set(after) == {2.0}
    described = await admin.describe("scale")
    states = {v.version: v.state for v in described.versions}
    assert states == {"1": "UNAVAILABLE", "2": "READY"}
    assert described.serving_version == "2"


async def test_registrations_of_one_name_at_once_get_distinct_versions(
    admin: AsyncAdminClient, tmp_path: Path
) -> None:
    files = [scale_model(tmp_path / f"s{i}.onnx", float(i)) for i in range(1, 4)]
    responses = await asyncio.gather(*(admin.register("scale", {"model.onnx": f}) for f in files))
    assert sorted(r.version for r in responses) == ["1", "2", "3"]


async def test_a_large_artifact_streams_in_chunks(
    served: Served, admin: AsyncAdminClient, client: AsyncClient, tmp_path: Path
) -> None:
    """Weights of several MB go through as many chunks; progress reports each."""
    weights = np.random.default_rng(0).random((1024, 1536), dtype=np.float32)  # 6 MB
    path = _matmul_model(tmp_path / "big.onnx", weights)
    seen: list[int] = []
    response = await admin.register(
        "big", {"model.onnx": path}, progress=lambda _f, sent, _t: seen.append(sent)
    )
    assert response.version == "1"
    assert len(seen) > 6 and seen[-1] == path.stat().st_size
    x = np.ones((1, 1024), np.float32)
    y = (await client.infer("big", {"x": x}))["y"]
    np.testing.assert_allclose(y, x @ weights, rtol=1e-4)


def _matmul_model(path: Path, weights: np.ndarray) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


async def test_admin_calls_need_the_token_but_inference_does_not(
    served: Served, client: AsyncClient
) -> None:
    for token in (None, "wrong-token-0123456789abcdef"):
        async with AsyncAdminClient(served.address, token) as anonymous:
            with pytest.raises(AdminError) as refused:
                await anonymous.register("mnist", {"model.onnx": DIGITS_ONNX})
            assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(AdminError) as refused:
                await anonymous.list_models()
            assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert not (served.repo / "mnist").exists()
    assert await client.is_model_ready("digits")


async def test_a_registration_completes_when_its_caller_leaves_after_the_upload(
    repo: Path, tmp_path: Path
) -> None:
    """Once the bytes are in, a caller that gives up does not leave half a change.

    The caller leaves once the gateway has started loading the model, which it does only
    after every byte is in and verified; a fixed client deadline instead raced the upload
    on a slow machine (the bytes were not all in, so nothing was to be registered).
    """
    fake = FakeBackend()
    server = await start(repo, {**gateway_backends(), "fake": fake}, max_inflight_batches=1)
    served = Served(server, repo)
    try:
        # Loading makes 10 calls (warm-up, profile), 0.1 s each: a second to leave in.
        artifact = fake_model(tmp_path / "model.fake", delay_s=0.1)
        config = mc.ModelConfig(backend="fake", max_batch_size=8)
        async with AsyncAdminClient(served.address, TOKEN) as admin:
            call = asyncio.ensure_future(admin.register("slow", {"model.fake": artifact}, config))
            await wait_until(lambda: bool(fake.loaded), "the gateway never loaded the model")
            assert not call.done()  # still loading
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        await wait_until(
            lambda: "slow" in served.server.core.registry, "the registration did not finish"
        )
        assert served.server.core.model("slow").version == "1"
        assert (served.repo / "slow" / "1" / "model.fake").is_file()
        assert not any((served.repo / ".staging").iterdir())
    finally:
        await server.stop()
