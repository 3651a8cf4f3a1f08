"""The same models served pinned to each backend in turn answer the same through gRPC.

Each run starts a real gateway on port 0 over a repository whose config.pbtxt says
`backend: "<name>"`, as an operator would write it. The backend is wrapped so that
the test can count the calls that reach the runtime: a request of the wrong
datatype or shape must be refused by the gateway before one does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.clients import AsyncClient, InferenceError
from infergate.gateway.server import GatewayServer
from infergate.settings import Settings
from tests.backends.support import ATOL, BACKENDS, RTOL, Counting, pinned_repository, reference

MODELS = ("digits", "cnn")

pytestmark = pytest.mark.parametrize("backend", list(BACKENDS))


@pytest.fixture
async def served(tmp_path: Path, backend: str) -> AsyncIterator[tuple[GatewayServer, Counting]]:
    repo = pinned_repository(tmp_path / "repo", backend, MODELS)
    counting = Counting(BACKENDS[backend])
    server = GatewayServer(
        Settings(
            metrics_port=0, model_repository=repo, port=0, shutdown_grace_s=1.0, use_gpu=False
        ),
        backends={backend: counting},
    )
    await server.start()
    try:
        yield server, counting
    finally:
        await server.stop()


async def test_answers_like_the_onnx_reference_under_the_same_names(
    served: tuple[GatewayServer, Counting], backend: str
) -> None:
    server, _ = served
    rng = np.random.default_rng(7)
    async with AsyncClient(server.address) as client:
        for model, shape in (("digits", (64,)), ("cnn", (3, 32, 32))):
            meta = await client.model_metadata(model)
            assert [(t.name, list(t.shape)) for t in meta.inputs] == [("x", [-1, *shape])]
            assert [(t.name, list(t.shape)) for t in meta.outputs] == [("y", [-1, 10])]
            for rows in (1, 6):
                x = rng.standard_normal((rows, *shape), dtype=np.float32)
                y = (await client.infer(model, {"x": x}))["y"]
                np.testing.assert_allclose(y, reference(model, {"x": x}), rtol=RTOL, atol=ATOL)
    for model in MODELS:
        assert server.core.model(model).backend == backend


@pytest.mark.parametrize(
    "x",
    [
        pytest.param(np.zeros((2, 64), np.float64), id="fp64-for-fp32"),
        pytest.param(np.zeros((2, 64), np.int32), id="int32-for-fp32"),
        pytest.param(np.zeros((2, 63), np.float32), id="63-columns"),
        pytest.param(np.zeros((64,), np.float32), id="no-batch-dim"),
        pytest.param(np.zeros((2, 8, 8), np.float32), id="wrong-rank"),
        pytest.param(np.zeros((65, 64), np.float32), id="above-max-batch"),
    ],
)
async def test_a_wrong_dtype_or_shape_is_refused_before_the_runtime(
    served: tuple[GatewayServer, Counting], backend: str, x: np.ndarray
) -> None:
    server, counting = served
    calls = counting.calls  # the warm-ups
    async with AsyncClient(server.address) as client:
        with pytest.raises(InferenceError) as error:
            await client.infer("digits", {"x": x})
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "'x'" in str(error.value) or "batch" in str(error.value)
        assert counting.calls == calls
        await client.infer("digits", {"x": np.zeros((1, 64), np.float32)})
    assert counting.calls == calls + 1
