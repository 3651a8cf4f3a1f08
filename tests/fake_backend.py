"""A backend the tests control exactly: how long each call takes, when it fails.

It "loads" a `model.fake` file holding JSON settings and computes y = 2 * x on an
FP32 [batch, 4] input, recording every batch it runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from infergate.backends.base import Backend, BackendOptions, LoadedModel
from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import TensorSpec

CONFIG = """
max_batch_size: 8
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} {queue} }}
"""


def write_fake_model(
    repo: Path,
    name: str,
    *,
    delay_s: float = 0.0,
    fail_on: float | None = None,
    queue_delay_us: int = 1000,
    queue_policy: str = "",
) -> Path:
    folder = repo / name / "1"
    folder.mkdir(parents=True)
    (folder / "model.fake").write_text(json.dumps({"delay_s": delay_s, "fail_on": fail_on}))
    queue = f"default_queue_policy {{ {queue_policy} }}" if queue_policy else ""
    (repo / name / "config.pbtxt").write_text(CONFIG.format(delay_us=queue_delay_us, queue=queue))
    return folder


class FakeModel(LoadedModel):
    def __init__(self, delay_s: float, fail_on: float | None) -> None:
        self.delay_s = delay_s
        self.fail_on = fail_on
        # Batches served to requests; the loader's warm-up and profile calls (made
        # from its own thread, not a gateway worker) are kept apart in load_calls.
        self.batches: list[np.ndarray] = []
        self.load_calls = 0
        self._lock = threading.Lock()

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return (TensorSpec("x", "FP32", (-1, 4)),)

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return (TensorSpec("y", "FP32", (-1, 4)),)

    @property
    def device(self) -> str:
        return "cpu"

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with self._lock:
            if threading.current_thread().name.startswith("infergate-worker"):
                self.batches.append(np.array(x))
            else:
                self.load_calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise RuntimeError(f"failed on cue ({self.fail_on})")
        return {"y": x * 2}

    def values_seen(self) -> set[float]:
        with self._lock:
            return {float(v) for b in self.batches for v in b.reshape(-1)}


class FakeBackend(Backend):
    name = "fake"
    artifact_names = ("model.fake",)

    def __init__(self) -> None:
        self.loaded: dict[str, FakeModel] = {}

    def version(self) -> str:
        return "0"

    def devices(self) -> list[str]:
        return ["cpu"]

    def load(self, artifact: Path, options: BackendOptions) -> LoadedModel:
        try:
            settings = json.loads(artifact.read_text())
        except ValueError as exc:
            raise ModelLoadError(f"fake model {artifact} is not JSON: {exc}") from exc
        model = FakeModel(settings["delay_s"], settings["fail_on"])
        self.loaded[artifact.parent.parent.name] = model
        return model
