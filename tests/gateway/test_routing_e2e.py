"""Routing end to end: the demo cnn served on every installed backend, over gRPC."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from infergate.backends.base import LoadedModel
from infergate.clients import AsyncClient
from infergate.gateway.core.arms import Circuit
from infergate.gateway.core.spec import TensorSpec
from infergate.gateway.server import GatewayServer
from infergate.protocol import model_config_pb2 as mc
from infergate.settings import Settings
from tests.conftest import DEMO_REPOSITORY

ONNX = DEMO_REPOSITORY / "cnn" / "1" / "model.onnx"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPOSITORY / "cnn", repo / "cnn")
    server = GatewayServer(Settings(model_repository=repo, port=0, metrics_port=0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def reference(x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


async def send(server: GatewayServer, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(n)]
    async with AsyncClient(server.address) as client:
        results = await asyncio.gather(*(client.infer("cnn", {"x": x}) for x in inputs))
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_allclose(result["y"], reference(x), rtol=1e-4, atol=1e-4)


async def test_every_backend_is_an_arm_measured_at_load(served: GatewayServer) -> None:
    model = served.core.model("cnn")
    backends = {arm.backend for arm in model.arms}
    assert {"onnxruntime", "openvino", "tflite"} <= backends
    for arm in model.arms:
        assert arm.latency.samples >= 4  # the load-time profile over several sizes
        assert arm.latency.predict_s(32) > arm.latency.predict_s(1) > 0


async def test_batches_go_to_the_arm_predicted_fastest_and_answers_match(
    served: GatewayServer,
) -> None:
    model = served.core.model("cnn")
    await send(served, 48)
    report = {row["arm"]: row for row in model.router.describe()}
    assert sum(row["batches"] for row in report.values()) == model.stats.execution_count
    fastest = min(model.arms, key=lambda a: a.latency.predict_s(1))
    # Most batches went to the arm the router thinks fastest now (probes aside).
    busiest = max(report.values(), key=lambda row: row["batches"])
    assert busiest["arm"] == fastest.name, report


async def test_policy_changes_live_to_a_fixed_arm(served: GatewayServer) -> None:
    model = served.core.model("cnn")
    config = mc.ModelConfig()
    config.CopyFrom(model.config)
    config.routing.policy = "fixed"
    config.routing.fixed_arm = "openvino"
    served.core.reconfigure(model, config)
    before = {a.name: a.batches for a in model.arms}
    await send(served, 24, seed=1)
    ran = {a.name: a.batches - before[a.name] for a in model.arms}
    assert ran["openvino/cpu/fp32"] == sum(ran.values()) > 0


class Broken(LoadedModel):
    """A real arm that starts failing: its runtime raises on every call."""

    def __init__(self, inner: LoadedModel) -> None:
        self.inner = inner

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self.inner.inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self.inner.outputs

    @property
    def device(self) -> str:
        return self.inner.device

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("device lost")


async def test_a_failing_arm_is_routed_around_and_its_circuit_opens(
    served: GatewayServer,
) -> None:
    model = served.core.model("cnn")
    fastest = min(model.arms, key=lambda a: a.latency.predict_s(1))
    fastest.runtime = Broken(fastest.runtime)
    for seed in range(6):  # one batch at a time: each is tried on the broken arm first
        await send(served, 1, seed=seed)  # and still answered, by the next-best arm
    assert fastest.failures >= 1
    assert fastest.circuit is Circuit.OPEN
    assert "device lost" in fastest.last_error
