"""TFLite (LiteRT) variants, converted with tensorflow from the model's source.

A .tflite file cannot be re-quantized well; these variants are converted again from
the model's Keras or SavedModel source, which lives in the version folder:

    <version>/source.keras        a Keras model file (model.save("source.keras")), or
    <version>/saved_model/        a SavedModel folder (saved_model.pb, variables/)

- `int8`: full integer quantization (every op int8, TFLITE_BUILTINS_INT8 only, so
  the conversion fails rather than leave float ops behind), activation ranges from
  a representative dataset of the calibration rows, one row per sample. The model's
  inputs and outputs stay float32, so it answers the same requests as the fp32 file
  (a quantize op in, a dequantize op out).
- `fp16`: weights stored as fp16 (half the size); XNNPACK computes in fp32, or in
  fp16 on CPUs that have it.

The gate loads each through the tflite backend and records whether XNNPACK took
the graph (`runtime.xnnpack` in gate.json). Without tensorflow, both are refused.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from infergate.optimize import deps
from infergate.optimize.machine import Machine
from infergate.optimize.recipe import BuildContext, BuiltArtifact, Recipe
from infergate.schema.errors import PreconditionFailed

BACKEND = "tflite"
KERAS_SOURCE = "source.keras"
SAVED_MODEL = "saved_model"
ARTIFACT = "model.tflite"


def find_source(version_dir: Path) -> Path | None:
    """The version's Keras file or SavedModel folder, if it has one."""
    keras_file = version_dir / KERAS_SOURCE
    if keras_file.is_file():
        return keras_file
    saved = version_dir / SAVED_MODEL
    if (saved / "saved_model.pb").is_file():
        return saved
    return None


def _check(machine: Machine, version_dir: Path) -> str | None:
    if not machine.has("tensorflow"):
        return deps.missing_reason("tensorflow") + "; it converts the model's source to .tflite"
    if not machine.has("ai_edge_litert"):
        return deps.missing_reason("ai_edge_litert") + "; the tflite backend runs on it"
    if find_source(version_dir) is None:
        return (
            f"no model source to convert: put a Keras model at <version>/{KERAS_SOURCE} or "
            f"a SavedModel at <version>/{SAVED_MODEL}/ (a .tflite file is not re-quantized)"
        )
    return None


def build_int8(ctx: BuildContext) -> BuiltArtifact:
    tf = _tensorflow()
    source, converter = _converter(ctx, tf)
    names = [t.name for t in ctx.spec.inputs]
    calibrate = ctx.progress.sub(0.2, 0.9)
    total = max(1, ctx.calibration.rows)

    def representative() -> Iterator[Any]:
        for i, batch in enumerate(ctx.calibration.batches(ctx.spec, 1)):
            calibrate.report("calibrate", (i + 1) / total, f"{i + 1} rows seen")
            arrays = [np.asarray(batch[n], dtype=np.float32) for n in names]
            yield arrays if len(arrays) == 1 else dict(zip(names, arrays, strict=True))

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    _convert(ctx, converter, "full integer (int8)")
    return BuiltArtifact(
        ARTIFACT,
        (source,),
        details={
            "method": "TFLiteConverter, full integer",
            "supported_ops": "TFLITE_BUILTINS_INT8",
            "io_types": "float32",
            "representative_rows": ctx.calibration.rows,
            "tensorflow": deps.version("tensorflow"),
        },
    )


def build_fp16(ctx: BuildContext) -> BuiltArtifact:
    tf = _tensorflow()
    source, converter = _converter(ctx, tf)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    _convert(ctx, converter, "fp16 weights")
    return BuiltArtifact(
        ARTIFACT,
        (source,),
        details={
            "method": "TFLiteConverter, supported_types=[float16]",
            "tensorflow": deps.version("tensorflow"),
        },
    )


def _tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    return deps.need("tensorflow", "the tflite variants")


def _converter(ctx: BuildContext, tf: Any) -> tuple[Path, Any]:
    source = find_source(ctx.version_dir)
    if source is None:
        raise PreconditionFailed(f"no {KERAS_SOURCE} or {SAVED_MODEL}/ in {ctx.version_dir}")
    ctx.progress.report("build", 0.05, f"loading {source.name}")
    if source.is_dir():
        return source, tf.lite.TFLiteConverter.from_saved_model(str(source))
    import keras

    model = keras.models.load_model(str(source), compile=False)
    return source, tf.lite.TFLiteConverter.from_keras_model(model)


def _convert(ctx: BuildContext, converter: Any, what: str) -> None:
    ctx.progress.report("build", 0.2, f"converting: {what}")
    # Keras prints its temporary SavedModel's signatures to stdout: not news here.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            content = bytes(converter.convert())
        except Exception as exc:  # the converter raises ConverterError and others
            raise PreconditionFailed(f"tflite {what}: the conversion failed: {exc}") from exc
    (ctx.out_dir / ARTIFACT).write_bytes(content)
    ctx.progress.report("build", 1.0, f"{ARTIFACT} written ({len(content)} bytes)")


RECIPES = (
    Recipe(
        BACKEND,
        "int8",
        "full integer quantization from the Keras/SavedModel source (float32 I/O)",
        _check,
        build_int8,
    ),
    Recipe(
        BACKEND,
        "fp16",
        "fp16 weights, from the Keras/SavedModel source",
        _check,
        build_fp16,
    ),
)
