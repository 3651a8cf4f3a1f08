"""Routing end to end: the demo cnn served on every installed backend, over gRPC."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from infergate.backends.base import LoadedModel, WrappedModel
from infergate.clients import AsyncClient
from infergate.gateway.core.arms import Circuit
from infergate.gateway.core.routing import INLINE_AFTER_SAMPLES
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
        assert arm.latency.samples == 3  # the load-time profile: sizes 1, 8 and 32
        assert arm.latency.predict_s(32) > 0 and arm.latency.predict_s(1) > 0


async def test_batches_avoid_an_arm_that_is_clearly_slower_and_answers_match(
    served: GatewayServer,
) -> None:
    model = served.core.model("cnn")
    # Slow down the arm the router prefers now, so that it runs (and shows it) first.
    slow = min(model.arms, key=lambda a: a.latency.predict_s(1))
    slow.runtime = Slowed(slow.runtime, delay_s=0.05)
    for seed in range(3):  # it runs these, slowly, until the router believes it
        await send(served, 1, seed=seed)
    slow_before = slow.batches
    await send(served, 48, seed=1)
    report = {row.arm: row for row in model.router.describe()}
    assert sum(row.batches for row in report.values()) == model.stats.execution_count
    others = sum(a.batches for a in model.arms if a is not slow)
    # It may still be probed now and then, within the exploration budget.
    assert slow.batches - slow_before <= max(1, 0.1 * others), report
    assert slow.latency.predict_s(1) > 0.02  # others take ~1 ms


async def test_policy_changes_live_to_a_fixed_arm(served: GatewayServer) -> None:
    model = served.core.model("cnn")
    config = mc.ModelConfig()
    config.CopyFrom(model.config)
    config.routing.policy = "fixed"
    config.routing.fixed_arm = "openvino"
    served.lifecycle.reconfigure(model, config)
    before = {a.name: a.batches for a in model.arms}
    await send(served, 24, seed=1)
    ran = {a.name: a.batches - before[a.name] for a in model.arms}
    assert ran["openvino/cpu/fp32"] == sum(ran.values()) > 0


class Slowed(WrappedModel):
    """A real arm made slower: each call also sleeps (as a slower device would)."""

    def __init__(self, inner: LoadedModel, delay_s: float) -> None:
        super().__init__(inner)
        self.delay_s = delay_s

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.delay_s)
        return self.inner.infer(inputs)


class Broken(WrappedModel):
    """A real arm that starts failing: its runtime raises on every call."""

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("device lost")


async def test_a_failing_arm_is_routed_around_and_its_circuit_opens(
    served: GatewayServer,
) -> None:
    model = served.core.model("cnn")
    broken = next(a for a in model.arms if a.backend == "openvino")
    broken.runtime = Broken(broken.runtime)
    # Fixed on the broken arm, so that every batch tries it first (the latency
    # policy would soon stop trying an arm that fails).
    config = mc.ModelConfig()
    config.CopyFrom(model.config)
    config.routing.policy = "fixed"
    config.routing.fixed_arm = "openvino"
    served.lifecycle.reconfigure(model, config)
    for seed in range(6):  # one batch at a time, each answered by another arm
        await send(served, 1, seed=seed)
    assert broken.failures == 3 and broken.circuit is Circuit.OPEN  # then skipped
    assert "device lost" in broken.last_error
    assert sum(a.batches for a in model.arms if a is not broken) == 6


@pytest.mark.parametrize("inline_below_us", [1_000_000, 0])
async def test_calls_cheaper_than_a_thread_hop_run_on_the_event_loop(
    tmp_path: Path, inline_below_us: int
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPOSITORY / "digits", repo / "digits")
    # One arm takes every batch: under the latency policy, noisy first timings can
    # spread the 20 calls over several arms, each needing its own measured calls
    # before it runs inline.
    with (repo / "digits" / "config.pbtxt").open("a") as config:
        config.write('routing { policy: "fixed" fixed_arm: "onnxruntime/cpu/fp32" }\n')
    settings = Settings(
        model_repository=repo, port=0, metrics_port=0, inline_below_us=inline_below_us
    )
    server = GatewayServer(settings)
    await server.start()
    try:
        model = server.core.model("digits")
        rng = np.random.default_rng(0)
        async with AsyncClient(server.address) as client:
            for _ in range(20):  # distinct inputs: the response cache is on
                x = rng.standard_normal((1, 64)).astype(np.float32)
                result = await client.infer("digits", {"x": x})
                expected = model.runtime.infer({"x": x})["y"]
                np.testing.assert_allclose(result["y"], expected, rtol=1e-5)
        router = model.router
        assert model.stats.execution_count == 20
        (pinned,) = [a for a in model.arms if a.name == "onnxruntime/cpu/fp32"]
        assert pinned.batches == 20
        if inline_below_us:
            assert router.inline_batches >= 20 - INLINE_AFTER_SAMPLES  # once measured
        else:
            assert router.inline_batches == 0
    finally:
        await server.stop()
