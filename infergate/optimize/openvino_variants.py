"""OpenVINO variants: an int8 IR through NNCF, and bf16/fp16 inference precision.

- `int8`: NNCF post-training quantization (`nncf.quantize` over an `nncf.Dataset`
  of the calibration rows, one row per item, all of them used), saved as IR with
  its weights left as quantized (compress_to_fp16 off, so nothing else changes
  precision). Served with inference_precision f32 for what stays in float.
- `bf16` / `fp16`: the fp32 artifact itself (hard-linked into the variant's folder,
  so it costs no space), served with `inference_precision` bf16 or f16: the CPU
  plugin then computes in that precision. Offered only where the CPU plugin lists
  it among its OPTIMIZATION_CAPABILITIES; elsewhere OpenVINO would quietly run f32.

The fp32 arm stays fp32: the backend asks for INFERENCE_PRECISION_HINT f32 unless a
variant's parameters say otherwise.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from infergate.optimize import deps
from infergate.optimize.machine import Machine
from infergate.optimize.recipe import (
    Build,
    BuildContext,
    BuiltArtifact,
    Check,
    Recipe,
    first_file,
    map_inputs,
    missing_file,
)
from infergate.schema.errors import PreconditionFailed

BACKEND = "openvino"
# As the backend prefers them: IR first, then ONNX (which OpenVINO reads directly).
SOURCES = ("model.xml", "model.onnx")
PARAMETER = "inference_precision"


def _check(*modules: str) -> Check:
    def check(machine: Machine, version_dir: Path) -> str | None:
        for module in ("openvino", *modules):
            if not machine.has(module):
                return deps.missing_reason(module)
        return missing_file(version_dir, SOURCES, "ONNX model or OpenVINO IR")

    return check


def _precision_check(capability: str) -> Check:
    def check(machine: Machine, version_dir: Path) -> str | None:
        if machine.openvino_capabilities is None:
            return f"OpenVINO's CPU plugin could not be asked: {machine.openvino_error}"
        if capability not in machine.openvino_capabilities:
            return (
                f"this CPU's OpenVINO plugin has no {capability} among its "
                f"OPTIMIZATION_CAPABILITIES {list(machine.openvino_capabilities)}: "
                "it would compute in f32 anyway"
            )
        return _check()(machine, version_dir)

    return check


def build_int8(ctx: BuildContext) -> BuiltArtifact:
    import openvino as ov

    nncf = deps.need("nncf", "the OpenVINO int8 variant")
    nncf.set_log_level(logging.ERROR)
    source = first_file(ctx.version_dir, SOURCES, "ONNX model or OpenVINO IR")
    ctx.progress.report("build", 0.05, f"reading {source.name}")
    model = ov.Core().read_model(str(source))
    port_names = [port.get_any_name() for port in model.inputs]
    names = map_inputs([t.name for t in ctx.spec.inputs], port_names, "openvino int8")
    items = [
        {names[k]: v for k, v in batch.items()} for batch in ctx.calibration.batches(ctx.spec, 1)
    ]
    calibrate = ctx.progress.sub(0.1, 0.9)
    seen = [0]

    def transform(item: dict[str, Any]) -> dict[str, Any]:
        seen[0] += 1
        calibrate.report("calibrate", seen[0] / len(items), f"{seen[0]} rows seen")
        return item

    quantized = nncf.quantize(model, nncf.Dataset(items, transform), subset_size=len(items))
    ov.save_model(quantized, str(ctx.out_dir / "model.xml"), compress_to_fp16=False)
    ctx.progress.report("build", 1.0, "int8 IR written")
    return BuiltArtifact(
        "model.xml",
        _ir_files(source),
        parameters={PARAMETER: "f32"},
        details={
            "method": "nncf.quantize",
            "nncf": deps.version("nncf"),
            "subset_size": len(items),
            "compress_to_fp16": False,
        },
    )


def _build_precision(precision: str) -> Build:
    def build(ctx: BuildContext) -> BuiltArtifact:
        source = first_file(ctx.version_dir, SOURCES, "ONNX model or OpenVINO IR")
        linked = [_link(path, ctx.out_dir / path.name) for path in _ir_files(source)]
        ctx.progress.report("build", 1.0, f"{source.name} served with {PARAMETER}={precision}")
        return BuiltArtifact(
            source.name,
            _ir_files(source),
            parameters={PARAMETER: precision},
            details={"method": f"INFERENCE_PRECISION_HINT={precision}", "artifact": linked},
        )

    return build


def _ir_files(source: Path) -> tuple[Path, ...]:
    """The artifact's files: an IR's .xml and its .bin, or the one ONNX file."""
    weights = source.with_suffix(".bin")
    if source.suffix == ".xml":
        if not weights.is_file():
            raise PreconditionFailed(f"{source.name} has no {weights.name} beside it")
        return (source, weights)
    return (source,)


def _link(source: Path, target: Path) -> str:
    """Hard-link (no copy) where the file system allows it, else copy."""
    try:
        os.link(source, target)
        return "hard link"
    except OSError:
        shutil.copy2(source, target)
        return "copy"


RECIPES = (
    Recipe(
        BACKEND,
        "int8",
        "NNCF post-training int8 quantization, saved as IR",
        _check("nncf"),
        build_int8,
    ),
    Recipe(
        BACKEND,
        "bf16",
        "the fp32 model computed in bf16 (inference_precision=bf16)",
        _precision_check("BF16"),
        _build_precision("bf16"),
    ),
    Recipe(
        BACKEND,
        "fp16",
        "the fp32 model computed in fp16 (inference_precision=f16)",
        _precision_check("FP16"),
        _build_precision("f16"),
    ),
)
