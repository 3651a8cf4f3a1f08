"""Which variants can be made where, and the errors for the ones that cannot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from infergate.optimize import Machine, availability, known_variants, plan, require
from infergate.optimize.machine import read_cpu_flags
from infergate.schema.errors import InvalidInput, PreconditionFailed
from tests.optimize.conftest import copy_version

ALL_MODULES = frozenset(
    {
        "onnx",
        "sympy",
        "onnxconverter_common",
        "openvino",
        "nncf",
        "tensorflow",
        "ai_edge_litert",
        "matplotlib",
        "onnxruntime",
    }
)
CPU_ONLY = Machine(
    arch="x86_64",
    cpu_flags=frozenset({"avx2"}),
    onnxruntime_skipped={"CUDAExecutionProvider": "no CUDA device 0 (found 0)"},
    openvino_capabilities=("FP32", "INT8"),
    modules=ALL_MODULES,
)
GPU = dataclasses.replace(
    CPU_ONLY,
    cpu_flags=frozenset({"avx512_vnni"}),
    onnxruntime_device="cuda:0",
    onnxruntime_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
    onnxruntime_skipped={},
    openvino_capabilities=("FP32", "INT8", "BF16", "FP16"),
)


@pytest.fixture
def version(tmp_path: Path) -> Path:
    return copy_version(tmp_path / "1")


def test_the_known_variants_per_backend() -> None:
    assert known_variants() == {
        "onnxruntime": ("optimized", "int8-dynamic", "int8-static", "fp16"),
        "openvino": ("int8", "bf16", "fp16"),
        "tflite": ("int8", "fp16"),
    }


def test_an_unknown_variant_lists_the_known_ones(version: Path) -> None:
    with pytest.raises(
        InvalidInput,
        match="unknown variant 'int4' for onnxruntime; known: optimized, int8-dynamic, "
        "int8-static, fp16",
    ):
        require("onnxruntime", "int4", CPU_ONLY, version)
    with pytest.raises(InvalidInput, match="no variants are known for backend 'tensorrt'"):
        availability("tensorrt", "int8", CPU_ONLY, version)
    with pytest.raises(InvalidInput, match=r"unknown variant\(s\) \['int4'\]"):
        plan(version, CPU_ONLY, ["openvino"], ["int8", "int4"])


def test_fp16_on_onnxruntimes_cpu_provider_is_refused_with_why(version: Path) -> None:
    refused = availability("onnxruntime", "fp16", CPU_ONLY, version)
    assert not refused.available
    assert "CPU execution provider" in refused.reason and "slower than fp32" in refused.reason
    assert "no CUDA device 0" in refused.reason
    with pytest.raises(PreconditionFailed, match=r"onnxruntime\.fp16 cannot be made here"):
        require("onnxruntime", "fp16", CPU_ONLY, version)
    assert availability("onnxruntime", "fp16", GPU, version).available


def test_openvino_precisions_follow_the_cpu_plugins_capabilities(version: Path) -> None:
    for variant, capability in (("bf16", "BF16"), ("fp16", "FP16")):
        refused = availability("openvino", variant, CPU_ONLY, version)
        assert not refused.available and f"no {capability} among" in refused.reason
        assert availability("openvino", variant, GPU, version).available
    unknown = dataclasses.replace(CPU_ONLY, openvino_capabilities=None, openvino_error="boom")
    assert "could not be asked: boom" in availability("openvino", "bf16", unknown, version).reason


def test_missing_libraries_and_files_are_reasons(tmp_path: Path, version: Path) -> None:
    no_nncf = dataclasses.replace(CPU_ONLY, modules=ALL_MODULES - {"nncf"})
    assert "nncf is not installed" in availability("openvino", "int8", no_nncf, version).reason
    no_tf = dataclasses.replace(CPU_ONLY, modules=ALL_MODULES - {"tensorflow"})
    assert (
        "tensorflow-cpu is not installed" in availability("tflite", "int8", no_tf, version).reason
    )
    assert "no model source to convert" in availability("tflite", "fp16", CPU_ONLY, version).reason
    (version / "source.keras").write_bytes(b"")
    assert availability("tflite", "fp16", CPU_ONLY, version).available
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no ONNX model" in availability("onnxruntime", "optimized", CPU_ONLY, empty).reason


def test_plan_lists_everything_with_its_reason(version: Path) -> None:
    listed = {a.name: a for a in plan(version, CPU_ONLY)}
    assert len(listed) == 9
    assert listed["onnxruntime.int8-static"].available
    assert not listed["onnxruntime.fp16"].available
    assert [a.name for a in plan(version, CPU_ONLY, ["openvino"], ["int8"])] == ["openvino.int8"]


def test_reduce_range_only_on_x86_without_vnni(tmp_path: Path) -> None:
    assert CPU_ONLY.reduce_range and not CPU_ONLY.vnni
    assert not GPU.reduce_range and GPU.vnni
    avx_vnni = dataclasses.replace(CPU_ONLY, cpu_flags=frozenset({"avx2", "avx_vnni"}))
    assert not avx_vnni.reduce_range
    arm = dataclasses.replace(CPU_ONLY, arch="aarch64", cpu_flags=frozenset({"asimd"}))
    assert not arm.reduce_range
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\n")
    assert read_cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_vnni"}
    assert read_cpu_flags(tmp_path / "missing") == frozenset()
