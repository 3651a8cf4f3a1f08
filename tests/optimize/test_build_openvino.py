"""OpenVINO variants of digits: int8 through NNCF, bf16/fp16 where the CPU computes in them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infergate.backends.openvino import OpenVinoBackend
from infergate.optimize import (
    ADMITTED,
    REFUSED,
    REJECTED,
    GateData,
    Machine,
    VariantOutcome,
    build_variant,
    build_variants,
    list_variants,
    servable_variants,
)
from infergate.optimize.gate import run_model
from tests.optimize.conftest import DIGITS_SPEC, OPTIONS, copy_version, digits_data, figures_of

pytest.importorskip("nncf")
Built = tuple[Path, dict[str, VariantOutcome]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, gate_data: GateData, machine: Machine) -> Built:
    version = copy_version(tmp_path_factory.mktemp("ov") / "1")
    outcomes = build_variants(
        version,
        DIGITS_SPEC,
        gate_data,
        backend_names=["openvino"],
        options=OPTIONS,
        machine=machine,
    )
    return version, {o.variant: o for o in outcomes}


def test_int8_through_nncf_is_admitted_and_saved_as_ir(built: Built) -> None:
    version, outcomes = built
    outcome = outcomes["int8"]
    assert outcome.status == ADMITTED, outcome.reason
    assert figures_of(outcome).reference == "openvino fp32 model.onnx"
    folder = version / "variants" / "openvino.int8"
    assert sorted(p.name for p in folder.iterdir()) == ["gate.json", "model.bin", "model.xml"]
    (stored,) = [v for v in list_variants(version) if v.variant == "int8"]
    assert stored.parameters == {"inference_precision": "f32"}


@pytest.mark.parametrize(("variant", "capability"), [("bf16", "BF16"), ("fp16", "FP16")])
def test_lower_precisions_follow_the_cpu(
    built: Built, machine: Machine, variant: str, capability: str
) -> None:
    version, outcomes = built
    outcome = outcomes[variant]
    if capability in (machine.openvino_capabilities or ()):
        assert outcome.status == ADMITTED, outcome.reason
        (stored,) = [v for v in list_variants(version) if v.variant == variant]
        assert stored.parameters == {"inference_precision": variant.replace("fp", "f")}
        # The fp32 file itself, linked: no second copy of the weights.
        assert stored.artifact is not None and stored.artifact.stat().st_nlink >= 1
    else:
        assert outcome.status == REFUSED
        assert f"no {capability} among its OPTIMIZATION_CAPABILITIES" in outcome.reason


def test_admitted_variants_reload_with_their_precision(built: Built, gate_data: GateData) -> None:
    version, outcomes = built
    backend = OpenVinoBackend()
    for variant in servable_variants(version, "openvino"):
        assert variant.artifact is not None
        model = backend.load(variant.artifact, variant.options(OPTIONS))
        y = run_model(model, DIGITS_SPEC, gate_data.validation)["y"]
        model.close()
        accuracy = float(np.mean(y.argmax(axis=1) == gate_data.validation.labels))
        assert accuracy == pytest.approx(figures_of(outcomes[variant.variant]).accuracy)


def test_int8_calibrated_on_garbage_is_rejected(tmp_path: Path, machine: Machine) -> None:
    version = copy_version(tmp_path / "1")
    outcome = build_variant(
        version,
        DIGITS_SPEC,
        "openvino",
        "int8",
        digits_data(1e6),
        options=OPTIONS,
        machine=machine,
    )
    assert outcome.status == REJECTED
    top1 = figures_of(outcome).top1_agreement
    assert top1 is not None and top1 < 0.9
