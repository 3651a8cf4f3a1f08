"""Calibration and validation data: checked against the model, kept apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infergate.optimize import data as data_module
from infergate.optimize import dataset, load_npz, prepare, random_dataset
from infergate.schema.errors import InvalidInput
from infergate.schema.tensors import ModelSpec, TensorSpec
from tests.optimize.conftest import DIGITS_SPEC

SPEC = DIGITS_SPEC


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 64), dtype=np.float32)


def save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, allow_pickle=False, **arrays)
    return path


def test_an_npz_with_inputs_labels_and_expected_outputs_loads(tmp_path: Path) -> None:
    path = save(
        tmp_path / "cal.npz",
        x=rows(5),
        labels=np.arange(5, dtype=np.int64),
        y=np.zeros((5, 10), np.float32),
    )
    loaded = load_npz(path, SPEC)
    assert loaded.rows == 5 and loaded.source == "cal.npz"
    assert loaded.labels is not None and list(loaded.labels) == [0, 1, 2, 3, 4]
    assert set(loaded.expected) == {"y"}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"z": rows(3)}, r"has no input \[.x.\] \(it holds \[.z.\]\); the model takes x FP32"),
        ({"x": rows(3), "w": rows(3)}, r"unknown array\(s\) \['w'\]"),
        ({"x": rows(3).astype(np.float64)}, r"input 'x' is float64; the model takes FP32"),
        ({"x": rows(3)[:, :63]}, r"input 'x' has shape \[3, 63\]: rows of shape \[64\]"),
        ({"x": rows(3)[0]}, r"input 'x' has shape \[64\]"),
        ({"x": np.zeros((0, 64), np.float32)}, "is empty: it has no rows"),
        ({"x": np.full((4, 64), np.nan, np.float32)}, "holds 256 NaN or Inf values"),
        ({"x": rows(3), "labels": np.array([0.5, 1, 2])}, "must be one integer class per row"),
        ({"x": rows(3), "labels": np.array([0, 1])}, "2 labels for 3 rows"),
        ({"x": rows(3), "labels": np.array([0, 1, 10])}, r"model has 10 classes \(0..9\)"),
        ({"x": rows(3), "y": np.zeros((3, 9), np.float32)}, "expected output 'y' has shape"),
    ],
)
def test_bad_data_is_refused_naming_the_tensor(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_npz(save(tmp_path / "bad.npz", **arrays), SPEC)


def test_an_inf_is_refused_with_its_row(tmp_path: Path) -> None:
    x = rows(4)
    x[2, 7] = np.inf
    with pytest.raises(InvalidInput, match=r"holds 1 NaN or Inf values \(the first in row 2\)"):
        dataset(SPEC, {"x": x})


def test_a_file_that_is_not_npz_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "cal.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(InvalidInput, match=r"cannot read cal\.npz as an \.npz file"):
        load_npz(path, SPEC)


def test_labels_need_a_classifier_output() -> None:
    spec = ModelSpec((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1,)),), 8)
    with pytest.raises(InvalidInput, match="no output of the model looks like class scores"):
        dataset(spec, {"x": np.zeros((2, 4), np.float32)}, np.array([0, 1]))


def test_one_set_is_split_deterministically_and_says_so() -> None:
    full = dataset(SPEC, {"x": rows(10)}, np.arange(10) % 10, source="all.npz")
    first = prepare(SPEC, full)
    second = prepare(SPEC, full)
    assert first.calibration.rows == 5 and first.validation.rows == 5
    np.testing.assert_array_equal(first.validation.inputs["x"], second.validation.inputs["x"])
    assert "split by a permutation seeded 0 into 5 calibration and 5 validation" in first.note
    cal = {r.tobytes() for r in first.calibration.inputs["x"]}
    assert not any(r.tobytes() in cal for r in first.validation.inputs["x"])
    other = prepare(SPEC, full, seed=1)
    assert not np.array_equal(other.validation.inputs["x"], first.validation.inputs["x"])


def test_splitting_needs_two_rows_and_a_sane_fraction() -> None:
    one = dataset(SPEC, {"x": rows(1)})
    with pytest.raises(InvalidInput, match="at least 2 are needed"):
        prepare(SPEC, one)
    with pytest.raises(InvalidInput, match="validation_fraction"):
        prepare(SPEC, dataset(SPEC, {"x": rows(4)}), validation_fraction=1.0)


def test_the_same_file_for_both_is_refused_and_overlap_is_noted(tmp_path: Path) -> None:
    path = save(tmp_path / "cal.npz", x=rows(4))
    with pytest.raises(InvalidInput, match="the same file"):
        prepare(SPEC, path, path)
    other = save(tmp_path / "val.npz", x=np.concatenate([rows(4)[:2], rows(2, seed=9)]))
    both = prepare(SPEC, path, other)
    assert "2 validation rows also appear in the calibration set" in both.note


def test_random_rows_are_uniform_floats_in_the_models_shape() -> None:
    spec = ModelSpec(
        (TensorSpec("x", "FP32", (-1, 3, 8, 8)),), (TensorSpec("y", "FP32", (-1, 10)),), 4
    )
    data = random_dataset(spec, 6, seed=3)
    x = data.inputs["x"]
    assert x.shape == (6, 3, 8, 8) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() < 1.0
    np.testing.assert_array_equal(x, random_dataset(spec, 6, seed=3).inputs["x"])


def test_batches_follow_the_models_batching() -> None:
    data = dataset(SPEC, {"x": rows(10)})
    assert [b["x"].shape[0] for b in data.batches(SPEC, 4)] == [4, 4, 2]
    unbatched = ModelSpec((TensorSpec("x", "FP32", (2, 64)),), SPEC.outputs, 0)
    whole = dataset(unbatched, {"x": np.zeros((3, 2, 64), np.float32)})
    assert [b["x"].shape for b in whole.batches(unbatched, 4)] == [(2, 64)] * 3


def test_the_classifier_output_is_found_by_shape() -> None:
    assert data_module.classes(SPEC) == 10
    regression = ModelSpec(SPEC.inputs, (TensorSpec("y", "FP32", (-1, 1)),), 8)
    assert data_module.classes(regression) is None
