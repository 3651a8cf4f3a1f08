"""Model files for registration tests: the demo models, and tiny ONNX models whose
answers tell which version computed them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.conftest import DEMO_REPOSITORY

DIGITS_ONNX = DEMO_REPOSITORY / "digits" / "1" / "model.onnx"
CNN_ONNX = DEMO_REPOSITORY / "cnn" / "1" / "model.onnx"
DIGITS_CONFIG = (DEMO_REPOSITORY / "digits" / "config.pbtxt").read_text()


def scale_model(path: Path, scale: float) -> Path:
    """y = x * scale on FP32 [batch, 4]: each version answers differently."""
    dims: list[int | str] = ["batch", 4]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        f"scale_{scale}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        initializer=[helper.make_tensor("k", TensorProto.FLOAT, [], [scale])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def fake_model(path: Path, delay_s: float = 0.0) -> Path:
    """An artifact for tests/fake_backend.py: y = 2x, taking delay_s per batch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"delay_s": delay_s, "fail_on": None}))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def row(value: float) -> np.ndarray:
    return np.full((1, 4), value, np.float32)
