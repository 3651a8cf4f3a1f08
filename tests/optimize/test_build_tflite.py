"""TFLite variants of digits, converted from its Keras source with tensorflow."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from infergate.optimize import (
    ADMITTED,
    GateData,
    Machine,
    VariantOutcome,
    build_variants,
    list_variants,
)
from tests.optimize.conftest import DIGITS_SPEC, OPTIONS, copy_version, figures_of

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")
Built = tuple[Path, dict[str, VariantOutcome]]
SCRIPT = Path(__file__).resolve().parents[2] / "models" / "make_demo_models.py"


def demo_script() -> ModuleType:
    # models/ is not a package: load the script by path (as tests/test_demo_models.py does).
    spec = importlib.util.spec_from_file_location("make_demo_models", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def keras_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits' Keras twin (the very weights of model.onnx), saved as source.keras."""
    mdm = demo_script()
    path = tmp_path_factory.mktemp("keras") / "source.keras"
    mdm.keras_digits(mdm.MODELS["digits"]).save(path)
    return path


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory,
    keras_source: Path,
    gate_data: GateData,
    machine: Machine,
) -> Built:
    version = copy_version(tmp_path_factory.mktemp("tfl") / "1", ("model.onnx", "model.tflite"))
    (version / "source.keras").write_bytes(keras_source.read_bytes())
    outcomes = build_variants(
        version,
        DIGITS_SPEC,
        gate_data,
        backend_names=["tflite"],
        options=OPTIONS,
        machine=machine,
    )
    return version, {o.variant: o for o in outcomes}


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_variants_are_admitted_and_run_on_xnnpack(built: Built, variant: str) -> None:
    version, outcomes = built
    outcome = outcomes[variant]
    assert outcome.status == ADMITTED, outcome.reason
    assert figures_of(outcome).reference == "tflite fp32 model.tflite"
    assert outcome.runtime["xnnpack"] is True
    (stored,) = [v for v in list_variants(version) if v.variant == variant]
    assert stored.record["runtime"]["xnnpack"] is True
    assert stored.artifact is not None and stored.artifact.name == "model.tflite"
    assert stored.record["source"]["files"][0]["file"] == "source.keras"


def test_int8_is_smaller_than_fp16(built: Built) -> None:
    version, _ = built
    sizes = {v.variant: v.artifact.stat().st_size for v in list_variants(version) if v.artifact}
    assert sizes["int8"] < sizes["fp16"] < (version / "model.tflite").stat().st_size


def test_without_a_tflite_file_the_reference_is_the_onnx_model(
    tmp_path: Path, keras_source: Path, gate_data: GateData, machine: Machine
) -> None:
    version = copy_version(tmp_path / "1")  # model.onnx only
    (version / "source.keras").write_bytes(keras_source.read_bytes())
    (outcome,) = build_variants(
        version,
        DIGITS_SPEC,
        gate_data,
        backend_names=["tflite"],
        variants=["fp16"],
        options=OPTIONS,
        machine=machine,
    )
    assert outcome.status == ADMITTED, outcome.reason
    assert outcome.figures is not None
    assert figures_of(outcome).reference == "onnxruntime fp32 model.onnx"
