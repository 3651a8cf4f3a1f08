"""What the optimize tests share: the digits model and its real data, small and fast.

digits (a 64-64-10 MLP trained on scikit-learn's bundled digits, 20 KB) is copied
into a fresh version folder per test module, with the data split as
models/make_demo_models.py splits it: the first 1500 rows trained the model, the
last 297 were held out. Calibration takes 300 training rows (enough, and quick);
validation is the held-out rows with their labels.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from infergate.backends.base import BackendOptions
from infergate.optimize import (
    GateData,
    GateFigures,
    Machine,
    VariantOutcome,
    dataset,
    prepare,
    probe_machine,
)
from infergate.schema.tensors import ModelSpec, TensorSpec
from tests.conftest import DEMO_REPOSITORY

DIGITS_SPEC = ModelSpec(
    (TensorSpec("x", "FP32", (-1, 64)),), (TensorSpec("y", "FP32", (-1, 10)),), 64
)
OPTIONS = BackendOptions(use_gpu=False)
CALIBRATION_ROWS = 300
TRAIN_ROWS = 1500


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as the model takes them (pixels / 16, float32) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float64) / 16.0).astype(np.float32)
    return x, np.asarray(digits.target, dtype=np.int64)


def digits_data(scale: float = 1.0) -> GateData:
    """Calibration rows (times `scale`: 1e6 or 0 make garbage) and the held-out rows."""
    x, labels = digits_arrays()
    calibration = dataset(
        DIGITS_SPEC,
        {"x": np.ascontiguousarray(x[:CALIBRATION_ROWS] * np.float32(scale))},
        source=f"digits train x {scale:g}",
    )
    validation = dataset(
        DIGITS_SPEC, {"x": x[TRAIN_ROWS:]}, labels[TRAIN_ROWS:], source="digits held out"
    )
    return prepare(DIGITS_SPEC, calibration, validation)


def copy_version(target: Path, files: Sequence[str] = ("model.onnx",)) -> Path:
    """A version folder holding the named digits artifacts."""
    target.mkdir(parents=True)
    for name in files:
        shutil.copy(DEMO_REPOSITORY / "digits" / "1" / name, target / name)
    return target


def figures_of(outcome: VariantOutcome) -> GateFigures:
    """The outcome's gate figures (only refused and failed outcomes have none)."""
    assert outcome.figures is not None, (outcome.status, outcome.reason)
    return outcome.figures


@pytest.fixture(scope="session")
def machine() -> Machine:
    return probe_machine(OPTIONS)


@pytest.fixture(scope="module")
def gate_data() -> GateData:
    return digits_data()
