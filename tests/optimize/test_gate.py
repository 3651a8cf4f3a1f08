"""The gate's arithmetic and verdicts, on arrays (the end-to-end runs are in test_build_*)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infergate.optimize import GateThresholds, compare, judge
from infergate.schema.errors import InvalidInput
from infergate.schema.tensors import ModelSpec, TensorSpec
from tests.optimize.conftest import DIGITS_SPEC


def scores(rows: int = 100, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 10)).astype(np.float32)


def test_an_identical_variant_has_zero_error_and_full_agreement() -> None:
    ref = scores()
    labels = ref.argmax(axis=1)
    figures = compare(DIGITS_SPEC, {"y": ref}, {"y": ref.copy()}, labels)
    assert figures.max_abs_error == 0 and figures.mean_rel_error == 0
    assert figures.top1_agreement == 1.0 and figures.accuracy_drop == 0.0
    assert judge(figures, GateThresholds()).admitted


def test_top1_disagreement_and_accuracy_drop_are_measured() -> None:
    ref = scores()
    labels = ref.argmax(axis=1)
    got = ref.copy()
    got[:3] = np.roll(got[:3], 1, axis=1)  # three rows change their answer
    changed = int(np.sum(got.argmax(axis=1) != labels))
    figures = compare(DIGITS_SPEC, {"y": ref}, {"y": got}, labels)
    assert figures.top1_agreement == pytest.approx(1 - changed / 100)
    assert figures.accuracy_drop == pytest.approx(changed / 100)
    verdict = judge(figures, GateThresholds())
    assert not verdict.admitted
    assert any(r.startswith("failed: top-1 agreement") for r in verdict.reasons)
    assert any(r.startswith("failed: accuracy drop") for r in verdict.reasons)
    loose = GateThresholds(max_accuracy_drop=1.0, min_top1_agreement=0.0)
    assert judge(figures, loose).admitted


def test_mean_relative_error_is_relative_to_the_references_scale() -> None:
    ref = np.full((4, 10), 2.0, np.float32)
    got = ref + np.float32(0.1)
    figures = compare(DIGITS_SPEC, {"y": ref}, {"y": got})
    assert figures.mean_rel_error == pytest.approx(0.05, rel=1e-5)
    assert figures.max_abs_error == pytest.approx(0.1, rel=1e-5)
    assert figures.accuracy is None  # no labels


def test_non_finite_outputs_always_reject() -> None:
    ref = scores(4)
    got = ref.copy()
    got[1, 2] = np.nan
    figures = compare(DIGITS_SPEC, {"y": ref}, {"y": got})
    assert figures.non_finite_values == 1 and not figures.finite
    verdict = judge(figures, GateThresholds(max_accuracy_drop=1.0, min_top1_agreement=0.0))
    assert not verdict.admitted and verdict.reasons[0].startswith("failed: finite outputs")


def test_an_error_bound_of_zero_rejects_any_difference() -> None:
    ref = scores()
    figures = compare(DIGITS_SPEC, {"y": ref}, {"y": ref + np.float32(1e-6)})
    assert judge(figures, GateThresholds()).admitted
    assert not judge(figures, GateThresholds(max_abs_error=0.0)).admitted


def test_models_without_class_scores_get_a_default_error_bound() -> None:
    spec = ModelSpec((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1, 1)),), 8)
    ref = np.ones((10, 1), np.float32)
    close = compare(spec, {"y": ref}, {"y": ref * np.float32(1.01)})
    far = compare(spec, {"y": ref}, {"y": ref * np.float32(1.2)})
    assert close.top1_agreement is None
    assert judge(close, GateThresholds()).admitted
    verdict = judge(far, GateThresholds())
    assert not verdict.admitted and "mean relative error" in verdict.reasons[0]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_accuracy_drop": -0.1}, "max_accuracy_drop must be between 0.0 and 1.0"),
        ({"max_accuracy_drop": 2}, "max_accuracy_drop must be between 0.0 and 1.0"),
        ({"min_top1_agreement": 1.5}, "min_top1_agreement must be between"),
        ({"max_abs_error": -1}, "max_abs_error must be at least 0.0"),
        ({"max_mean_rel_error": math.nan}, "max_mean_rel_error must be a number"),
    ],
)
def test_thresholds_out_of_range_are_invalid_input(values: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        GateThresholds(**values)


def test_thresholds_parse_from_text_by_name() -> None:
    parsed = GateThresholds.from_mapping({"max_accuracy_drop": "0.02", "max_abs_error": ""})
    assert parsed == GateThresholds(max_accuracy_drop=0.02)
    with pytest.raises(InvalidInput, match=r"unknown gate threshold\(s\) \['accuracy'\]"):
        GateThresholds.from_mapping({"accuracy": 1})
    with pytest.raises(InvalidInput, match="must be a number, not 'lots'"):
        GateThresholds.from_mapping({"max_abs_error": "lots"})
