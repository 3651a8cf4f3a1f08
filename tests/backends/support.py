"""What the backend tests share: the installed backends, pinning a model, the reference."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from infergate.backends.base import Backend, BackendOptions, LoadedModel, WrappedModel
from infergate.backends.discovery import discover
from infergate.gateway.core.loader import load_model
from infergate.gateway.core.repository import ModelSource, read_model
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.tensors import ModelSpec
from tests.conftest import DEMO_REPOSITORY

# Every backend installed here, in entry-point order; the suites run on each.
BACKENDS: dict[str, Backend] = discover().backends
# fp32 kernels sum in different orders (blocking, SIMD width): the runtimes agree
# to ~5e-7 on the demo models; anything real is orders of magnitude larger.
RTOL = 1e-4
ATOL = 1e-5
OPTIONS = BackendOptions(use_gpu=False)


def pinned(source: ModelSource, backend: str) -> ModelSource:
    """The same model with its config pinned to one backend, in memory."""
    config = mc.ModelConfig()
    if source.config is not None:
        config.CopyFrom(source.config)
    config.backend = backend
    config.platform = ""
    return dataclasses.replace(source, config=config)


@dataclasses.dataclass
class Loaded:
    runtime: LoadedModel
    spec: ModelSpec


def load_pinned(
    backend: str, model: str, repository: Path = DEMO_REPOSITORY, options: BackendOptions = OPTIONS
) -> Loaded:
    """Load a repository model on one backend the way the gateway does."""
    version = load_model(
        pinned(read_model(repository, model), backend), {backend: BACKENDS[backend]}, options, 32
    )
    return Loaded(version.runtime, version.spec)


def reference(model: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """y from the model's fp32 ONNX file on ONNX Runtime's CPU provider."""
    session = _sessions.get(model)
    if session is None:
        path = DEMO_REPOSITORY / model / "1" / "model.onnx"
        session = _sessions[model] = ort.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )
    (y,) = session.run(["y"], dict(inputs))
    return np.asarray(y)


_sessions: dict[str, ort.InferenceSession] = {}


def sample(spec: ModelSpec, rows: int, seed: int) -> np.ndarray:
    """Random input rows for the model's one input x."""
    (x,) = spec.inputs
    return np.random.default_rng(seed).standard_normal((rows, *x.shape[1:]), dtype=np.float32)


def pinned_repository(root: Path, backend: str, models: Sequence[str]) -> Path:
    """A copy of the demo models whose config.pbtxt pins `backend`."""
    for model in models:
        shutil.copytree(DEMO_REPOSITORY / model, root / model)
        config = root / model / "config.pbtxt"
        lines = [
            line
            for line in config.read_text().splitlines()
            if not line.startswith(("backend:", "platform:"))
        ]
        config.write_text("\n".join([*lines, f'backend: "{backend}"']) + "\n")
    return root


class Counting(Backend):
    """A real backend whose loaded models count the calls that reach the runtime."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.artifact_names = inner.artifact_names
        self.loaded: list[CountingModel] = []

    def version(self) -> str:
        return self.inner.version()

    def devices(self) -> list[str]:
        return self.inner.devices()

    def load(self, artifact: Path, options: BackendOptions) -> LoadedModel:
        model = CountingModel(self.inner.load(artifact, options))
        self.loaded.append(model)
        return model

    @property
    def calls(self) -> int:
        return sum(m.calls for m in self.loaded)


class CountingModel(WrappedModel):
    def __init__(self, inner: LoadedModel) -> None:
        super().__init__(inner)
        self.calls = 0
        self._lock = threading.Lock()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.calls += 1
        return self.inner.infer(inputs)
