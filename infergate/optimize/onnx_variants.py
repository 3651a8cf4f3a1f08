"""ONNX Runtime variants of a model.onnx.

- `optimized`: the graph optimizations applied once, offline, at
  ORT_ENABLE_EXTENDED (constant folding, redundant node removal, and fusions such
  as Gemm+Relu -> FusedGemm, Conv+Add+Relu -> FusedConv, written as standard
  com.microsoft contrib ops that every onnxruntime build loads). Not ORT_ENABLE_ALL:
  its layout transformations write NCHWc ops blocked for this CPU's vector width
  (8 floats with AVX2, 16 with AVX-512), a file another CPU may not load or may run
  wrongly; the backend still applies ALL when it loads the file, on the CPU it runs
  on. What is left to gain is mostly session start-up: the fp32 arm already gets
  the same optimizations at load time.
- `int8-dynamic`: weights int8 ahead of time, activations quantized per batch at
  run time (MatMulInteger, ConvInteger). Pays off on weight-heavy MatMul models;
  convolutions can get slower (ConvInteger has no fast path): the profiler decides.
- `int8-static`: QDQ format, int8 activations and weights (S8S8), weights per
  channel, activation ranges calibrated (MinMax) on the calibration set, after
  `quant_pre_process` (symbolic shape inference and basic optimizations).
  `reduce_range` (7-bit weights) on x86 CPUs without VNNI, as onnxruntime advises.
- `fp16`: every float tensor fp16, inputs and outputs kept fp32
  (onnxconverter-common, keep_io_types). Offered only where a GPU provider really
  runs: on the CPU execution provider fp16 kernels are few, casts are inserted
  around the rest, and it is slower than fp32 by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from infergate.optimize import deps
from infergate.optimize.data import DataSet
from infergate.optimize.machine import Machine
from infergate.optimize.progress import ProgressSpan
from infergate.optimize.recipe import (
    BuildContext,
    BuiltArtifact,
    Check,
    Recipe,
    first_file,
    map_inputs,
    missing_file,
)
from infergate.schema.tensors import ModelSpec

BACKEND = "onnxruntime"
SOURCE = ("model.onnx",)
ARTIFACT = "model.onnx"
# Past this, protobuf cannot hold the model in one message: weights go beside it.
_EXTERNAL_DATA_BYTES = 1_800_000_000
_CALIBRATION_BATCH = 16
# onnxruntime's MinMax calibration keeps every intermediate tensor of every batch in
# memory until the end (about 1 MB a row on the demo CNN), so at most this many rows
# are used, evenly spread over the set. Its CalibMaxIntermediateOutputs option would
# bound that, but (onnxruntime 1.31) it drops the batches collected so far instead of
# merging their ranges, and fails outright when the batch count is a multiple of it.
MAX_STATIC_CALIBRATION_ROWS = 1000


def _source_check(machine: Machine, version_dir: Path) -> str | None:
    return missing_file(version_dir, SOURCE, "ONNX model")


def _needs(*modules: str) -> Check:
    def check(machine: Machine, version_dir: Path) -> str | None:
        for module in modules:
            if not machine.has(module):
                return deps.missing_reason(module)
        return _source_check(machine, version_dir)

    return check


def _fp16_check(machine: Machine, version_dir: Path) -> str | None:
    if not machine.onnxruntime_device.startswith("cuda"):
        why = "; ".join(f"{p}: {r}" for p, r in machine.onnxruntime_skipped.items())
        return (
            "onnxruntime runs on its CPU execution provider here"
            + (f" ({why})" if why else "")
            + "; fp16 there inserts casts around most ops and runs slower than fp32"
        )
    needs: Check = _needs("onnx", "onnxconverter_common")
    return needs(machine, version_dir)


def build_optimized(ctx: BuildContext) -> BuiltArtifact:
    import onnxruntime as ort

    source = first_file(ctx.version_dir, SOURCE, "ONNX model")
    ctx.progress.report("build", 0.1, "applying graph optimizations (ORT_ENABLE_EXTENDED)")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(ctx.out_dir / ARTIFACT)
    options.log_severity_level = 3
    if source.stat().st_size > _EXTERNAL_DATA_BYTES:
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "model.onnx.data"
        )
    providers = list(ctx.machine.onnxruntime_providers)
    ort.InferenceSession(str(source), sess_options=options, providers=providers)
    ctx.progress.report("build", 1.0, "optimized graph written")
    return BuiltArtifact(
        ARTIFACT,
        (source,),
        details={
            "graph_optimization_level": "ORT_ENABLE_EXTENDED",
            "providers": providers,
            "ops": _op_counts(ctx.out_dir / ARTIFACT),
        },
    )


def build_int8_dynamic(ctx: BuildContext) -> BuiltArtifact:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = first_file(ctx.version_dir, SOURCE, "ONNX model")
    prepared = _pre_process(source, ctx)
    ctx.progress.report("build", 0.5, "quantizing weights to int8 (dynamic)")
    quantize_dynamic(
        prepared,
        ctx.out_dir / ARTIFACT,
        weight_type=QuantType.QInt8,
        per_channel=False,
        reduce_range=ctx.machine.reduce_range,
        use_external_data_format=source.stat().st_size > _EXTERNAL_DATA_BYTES,
    )
    ctx.progress.report("build", 1.0, "int8 (dynamic) model written")
    return BuiltArtifact(
        ARTIFACT,
        (source,),
        details={
            "method": "quantize_dynamic",
            "weight_type": "QInt8",
            "per_channel": False,
            "reduce_range": ctx.machine.reduce_range,
            "vnni": ctx.machine.vnni,
            "ops": _op_counts(ctx.out_dir / ARTIFACT),
        },
    )


def build_int8_static(ctx: BuildContext) -> BuiltArtifact:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    source = first_file(ctx.version_dir, SOURCE, "ONNX model")
    prepared = _pre_process(source, ctx)
    names = map_inputs([t.name for t in ctx.spec.inputs], _graph_inputs(prepared), "int8-static")
    rows = ctx.calibration
    if rows.rows > MAX_STATIC_CALIBRATION_ROWS:
        spread = np.linspace(0, rows.rows - 1, MAX_STATIC_CALIBRATION_ROWS).round().astype(int)
        rows = rows.take(spread, f"{rows.source} ({MAX_STATIC_CALIBRATION_ROWS} rows spread)")
    reader = CalibrationReader(
        rows, ctx.spec, names, ctx.progress.sub(0.3, 0.9), _CALIBRATION_BATCH
    )
    quantize_static(
        prepared,
        ctx.out_dir / ARTIFACT,
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=ctx.machine.reduce_range,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=source.stat().st_size > _EXTERNAL_DATA_BYTES,
    )
    ctx.progress.report("build", 1.0, "int8 (static, QDQ) model written")
    return BuiltArtifact(
        ARTIFACT,
        (source,),
        details={
            "method": "quantize_static",
            "format": "QDQ",
            "activation_type": "QInt8",
            "weight_type": "QInt8",
            "per_channel": True,
            "reduce_range": ctx.machine.reduce_range,
            "vnni": ctx.machine.vnni,
            "calibrate_method": "MinMax",
            "calibration_rows": rows.rows,
            "ops": _op_counts(ctx.out_dir / ARTIFACT),
        },
    )


def build_fp16(ctx: BuildContext) -> BuiltArtifact:
    onnx = deps.need("onnx", "the fp16 variant")
    converter = deps.need("onnxconverter_common", "the fp16 variant")
    source = first_file(ctx.version_dir, SOURCE, "ONNX model")
    ctx.progress.report("build", 0.1, "converting to fp16 (inputs and outputs stay fp32)")
    model = onnx.load(str(source))
    half = converter.float16.convert_float_to_float16(model, keep_io_types=True)
    large = source.stat().st_size > _EXTERNAL_DATA_BYTES
    onnx.save(half, str(ctx.out_dir / ARTIFACT), save_as_external_data=large)
    ctx.progress.report("build", 1.0, "fp16 model written")
    return BuiltArtifact(
        ARTIFACT,
        (source,),
        details={"method": "convert_float_to_float16", "keep_io_types": True},
    )


class CalibrationReader:
    """onnxruntime's CalibrationDataReader (it checks for `get_next`): the calibration
    rows in batches, by the artifact's input names, reporting progress."""

    def __init__(
        self,
        data: DataSet,
        spec: ModelSpec,
        names: dict[str, str],
        progress: ProgressSpan,
        batch: int,
    ) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = data.batches(spec, batch)
        self._names = names
        self._progress = progress
        self._total = max(1, data.rows)
        self._done = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        first = next(iter(batch.values()))
        self._done += int(first.shape[0]) if first.ndim else 1
        self._progress.report(
            "calibrate", min(1.0, self._done / self._total), f"{self._done} rows calibrated"
        )
        return {self._names[k]: v for k, v in batch.items()}

    def __iter__(self) -> CalibrationReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _pre_process(source: Path, ctx: BuildContext) -> Path:
    from onnxruntime.quantization import quant_pre_process

    ctx.progress.report("build", 0.05, "pre-processing (shape inference, basic fusions)")
    prepared = ctx.work_dir / "preprocessed.onnx"
    large = source.stat().st_size > _EXTERNAL_DATA_BYTES
    quant_pre_process(
        source,
        prepared,
        skip_symbolic_shape=not ctx.machine.has("sympy"),
        save_as_external_data=large,
    )
    ctx.progress.report("build", 0.3, "pre-processed")
    return prepared


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def _op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each type the written graph has (what the build changed)."""
    if not deps.available("onnx"):
        return {}
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


RECIPES = (
    Recipe(
        BACKEND,
        "optimized",
        "graph optimizations applied offline (ORT_ENABLE_EXTENDED)",
        _source_check,
        build_optimized,
    ),
    Recipe(
        BACKEND,
        "int8-dynamic",
        "int8 weights, activations quantized per batch (quantize_dynamic)",
        _needs("onnx"),
        build_int8_dynamic,
    ),
    Recipe(
        BACKEND,
        "int8-static",
        "QDQ S8S8 per-channel, calibrated on the calibration set (quantize_static)",
        _needs("onnx"),
        build_int8_static,
    ),
    Recipe(
        BACKEND,
        "fp16",
        "fp16 weights and compute, fp32 inputs and outputs (GPU providers only)",
        _fp16_check,
        build_fp16,
    ),
)
