"""ONNX Runtime variants of digits, built, gated on the real held-out digits, stored,
and loaded back through the real backend."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from infergate.backends.onnxruntime import OnnxRuntimeBackend
from infergate.optimize import (
    ADMITTED,
    REFUSED,
    REJECTED,
    GateData,
    GateThresholds,
    Machine,
    VariantOutcome,
    build_variant,
    build_variants,
    dataset,
    list_variants,
    prepare,
    servable_variants,
)
from infergate.optimize.gate import run_model
from infergate.schema.errors import InvalidInput, PreconditionFailed
from tests.optimize.conftest import (
    DIGITS_SPEC,
    OPTIONS,
    TRAIN_ROWS,
    copy_version,
    digits_arrays,
    digits_data,
    figures_of,
)

ORT_VARIANTS = ("optimized", "int8-dynamic", "int8-static")
Built = tuple[Path, dict[str, VariantOutcome], list[tuple[str, float, str]]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, gate_data: GateData, machine: Machine) -> Built:
    version = copy_version(tmp_path_factory.mktemp("ort") / "1")
    calls: list[tuple[str, float, str]] = []
    outcomes = build_variants(
        version,
        DIGITS_SPEC,
        gate_data,
        backend_names=["onnxruntime"],
        options=OPTIONS,
        machine=machine,
        progress=lambda s, f, m: calls.append((s, f, m)),
    )
    return version, {o.variant: o for o in outcomes}, calls


def test_every_cpu_variant_is_admitted_on_real_digits(built: Built) -> None:
    _, outcomes, _ = built
    for name in ORT_VARIANTS:
        outcome = outcomes[name]
        assert outcome.status == ADMITTED, (name, outcome.reason)
        figures = outcome.figures
        assert figures is not None and figures.rows == 297
        assert figures.reference == "onnxruntime fp32 model.onnx"
        assert figures.top1_agreement is not None and figures.top1_agreement >= 0.99
        assert figures.accuracy_drop is not None and figures.accuracy_drop <= 0.01
        assert figures.reference_accuracy == pytest.approx(0.93, abs=0.01)
    assert figures_of(outcomes["optimized"]).max_abs_error < 1e-5
    assert figures_of(outcomes["int8-static"]).max_abs_error > 0


def test_fp16_is_refused_on_the_cpu_provider(built: Built, machine: Machine) -> None:
    _, outcomes, _ = built
    if machine.onnxruntime_device.startswith("cuda"):
        pytest.skip("a GPU provider runs here: fp16 is offered")
    assert outcomes["fp16"].status == REFUSED
    assert "slower than fp32" in outcomes["fp16"].reason


def test_the_graphs_are_what_each_variant_says(built: Built) -> None:
    version, _, _ = built
    stored = {v.variant: v for v in list_variants(version)}
    ops = {name: stored[name].record["build"]["details"]["ops"] for name in ORT_VARIANTS}
    assert "FusedGemm" in ops["optimized"]  # Gemm+Relu fused offline
    assert "MatMulInteger" in ops["int8-dynamic"]
    assert "QuantizeLinear" in ops["int8-static"] and "DequantizeLinear" in ops["int8-static"]
    details = stored["int8-static"].record["build"]["details"]
    assert details["per_channel"] and details["format"] == "QDQ"
    assert details["reduce_range"] == (not stored["int8-static"].record["machine"]["vnni"])


def test_stored_variants_reload_through_the_backend_and_answer_as_gated(
    built: Built, gate_data: GateData
) -> None:
    version, outcomes, _ = built
    servable = {v.variant: v for v in servable_variants(version, "onnxruntime")}
    assert set(servable) == set(ORT_VARIANTS)
    backend = OnnxRuntimeBackend()
    labels = gate_data.validation.labels
    for name, variant in servable.items():
        assert variant.artifact is not None
        model = backend.load(variant.artifact, variant.options(OPTIONS))
        y = run_model(model, DIGITS_SPEC, gate_data.validation)["y"]
        model.close()
        accuracy = float(np.mean(y.argmax(axis=1) == labels))
        assert accuracy == pytest.approx(figures_of(outcomes[name]).accuracy)
        assert variant.record["figures"]["accuracy"] == pytest.approx(accuracy)


def test_progress_is_reported_in_stages_and_only_forwards(built: Built) -> None:
    _, _, calls = built
    fractions = [f for _, f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"build", "calibrate", "reference", "gate", "store"} <= {s for s, _, _ in calls}
    assert any("not available here" in m for _, _, m in calls)


def test_an_impossible_threshold_rejects_and_a_loose_one_admits(
    tmp_path: Path, gate_data: GateData, machine: Machine
) -> None:
    version = copy_version(tmp_path / "1")
    strict = build_variant(
        version,
        DIGITS_SPEC,
        "onnxruntime",
        "int8-dynamic",
        gate_data,
        options=OPTIONS,
        machine=machine,
        thresholds=GateThresholds(max_abs_error=0.0),
    )
    assert strict.status == REJECTED
    assert any(
        r.startswith("failed: max abs error")
        for r in (strict.verdict.reasons if strict.verdict else ())
    )
    (stored,) = list_variants(version)
    assert not stored.admitted and stored.artifact is None
    assert [p.name for p in stored.folder.iterdir()] == ["gate.json"]
    assert stored.figures["max_abs_error"] > 0
    loose = build_variant(
        version,
        DIGITS_SPEC,
        "onnxruntime",
        "int8-dynamic",
        gate_data,
        options=OPTIONS,
        machine=machine,
        thresholds=GateThresholds(max_abs_error=1.0),
    )
    assert loose.status == ADMITTED and servable_variants(version)


@pytest.mark.parametrize("scale", [1e6, 0.0])
def test_static_int8_calibrated_on_garbage_is_rejected_with_its_figures(
    tmp_path: Path, machine: Machine, scale: float
) -> None:
    version = copy_version(tmp_path / "1")
    outcome = build_variant(
        version,
        DIGITS_SPEC,
        "onnxruntime",
        "int8-static",
        digits_data(scale),
        options=OPTIONS,
        machine=machine,
    )
    assert outcome.status == REJECTED
    figures = outcome.figures
    assert figures is not None and figures.top1_agreement is not None
    assert figures.top1_agreement < 0.9 and figures.accuracy_drop > 0.05  # type: ignore[operator]
    (stored,) = list_variants(version)
    assert stored.figures["top1_agreement"] == pytest.approx(figures.top1_agreement)
    assert f"x {scale:g}" in stored.record["data"]["calibration_source"]
    loose = GateThresholds(max_accuracy_drop=1.0, min_top1_agreement=0.0)
    again = build_variant(
        version,
        DIGITS_SPEC,
        "onnxruntime",
        "int8-static",
        digits_data(scale),
        options=OPTIONS,
        machine=machine,
        thresholds=loose,
    )
    assert again.status == ADMITTED


def test_fp16_builds_where_a_gpu_provider_runs(
    tmp_path: Path, gate_data: GateData, machine: Machine
) -> None:
    pytest.importorskip("onnxconverter_common")
    import onnx

    gpu = dataclasses.replace(machine, onnxruntime_device="cuda:0")  # the facts of a GPU host
    version = copy_version(tmp_path / "1")
    outcome = build_variant(
        version, DIGITS_SPEC, "onnxruntime", "fp16", gate_data, options=OPTIONS, machine=gpu
    )
    assert outcome.status == ADMITTED, outcome.reason  # gated here on the CPU provider
    model = onnx.load(str(version / "variants" / "onnxruntime.fp16" / "model.onnx"))
    types = {i.data_type for i in model.graph.initializer}
    assert types == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_unknown_and_impossible_variants_are_typed_errors(
    tmp_path: Path, gate_data: GateData, machine: Machine
) -> None:
    version = copy_version(tmp_path / "1")
    with pytest.raises(InvalidInput, match="known: optimized, int8-dynamic, int8-static, fp16"):
        build_variant(version, DIGITS_SPEC, "onnxruntime", "int4", gate_data, machine=machine)
    cpu = dataclasses.replace(machine, onnxruntime_device="cpu")
    with pytest.raises(PreconditionFailed, match=r"onnxruntime\.fp16 cannot be made here"):
        build_variant(version, DIGITS_SPEC, "onnxruntime", "fp16", gate_data, machine=cpu)
    with pytest.raises(InvalidInput, match=r"unknown variant\(s\) \['int4'\]"):
        build_variants(version, DIGITS_SPEC, gate_data, variants=["int4"], machine=machine)
    assert not (version / "variants").exists() or list_variants(version) == []


def test_a_cancelled_build_leaves_nothing(
    tmp_path: Path, gate_data: GateData, machine: Machine
) -> None:
    version = copy_version(tmp_path / "1")

    def cancel(stage: str, fraction: float, message: str) -> None:
        if stage == "gate":
            raise KeyboardInterrupt  # the caller went away

    with pytest.raises(KeyboardInterrupt):
        build_variant(
            version,
            DIGITS_SPEC,
            "onnxruntime",
            "int8-static",
            gate_data,
            options=OPTIONS,
            machine=machine,
            progress=cancel,
        )
    assert list((version / "variants").iterdir()) == []


def test_static_calibration_uses_every_row_whatever_the_batch_count(
    tmp_path: Path, machine: Machine
) -> None:
    # 128 rows = 8 batches of 16: onnxruntime's CalibMaxIntermediateOutputs=8 would
    # have dropped them all ("No data is collected"); every row must count.
    x, labels = digits_arrays()
    data = prepare(
        DIGITS_SPEC,
        dataset(DIGITS_SPEC, {"x": x[:128]}, source="128 rows"),
        dataset(DIGITS_SPEC, {"x": x[TRAIN_ROWS:]}, labels[TRAIN_ROWS:]),
    )
    version = copy_version(tmp_path / "1")
    outcome = build_variant(
        version, DIGITS_SPEC, "onnxruntime", "int8-static", data, options=OPTIONS, machine=machine
    )
    assert outcome.status == ADMITTED, outcome.reason
    (stored,) = list_variants(version)
    assert stored.record["build"]["details"]["calibration_rows"] == 128
