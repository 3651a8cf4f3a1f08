"""Variants of a model (int8, fp16, bf16, graph-optimized), the accuracy gate, the profiler.

This layer sits above the backends and below the gateway core: it runs candidates
through the real backend classes and knows no gRPC. Every function here blocks, some
for minutes (calibration, conversion): call them from a worker process or thread,
never on the event loop. Long ones report progress through a callback
`(stage, fraction, message) -> None` (see `progress`); a callback that raises
cancels the operation, and nothing half-built is left behind.

Building variants (what an "optimize" admin call does)::

    from infergate import optimize

    data = optimize.prepare(spec, Path("calibration.npz"))         # one file: split
    data = optimize.prepare(spec, calibration_set, validation_set)  # or two sets
    outcomes = optimize.build_variants(
        version_dir, spec, data,
        backend_names=["onnxruntime"], variants=["int8-dynamic"],   # default: all
        options=backend_options,           # the BackendOptions the arms are served with
        thresholds=optimize.GateThresholds(max_accuracy_drop=0.005),
        progress=callback,
    )
    for o in outcomes:  # o.status: "admitted", "rejected", "refused" (not here), "failed"
        print(o.name, o.status, o.reason, o.figures)

    optimize.build_variant(version_dir, spec, "openvino", "int8", data)  # one; raises:
    #   InvalidInput        unknown variant (lists the known ones), bad thresholds, bad data
    #   PreconditionFailed  cannot be made here or from this model (says why)

    optimize.plan(version_dir, optimize.probe_machine())  # what could be made, or why not

Loading them (what the loader does for each version)::

    for v in optimize.servable_variants(version_dir):  # admitted, source unchanged
        model = backends[v.backend].load(v.artifact, v.options(base_options))
        # an arm: backend v.backend, device model.device, variant v.variant

    optimize.list_variants(version_dir)  # all stored, rejected ones too, with figures

Data: `load_npz(path, spec)` reads an .npz (inputs by name, optional `labels`,
optional expected outputs by output name) and checks it against the ModelSpec;
`dataset(spec, arrays)` checks arrays; `random_dataset(spec, rows, seed)` draws rows
for models without real data; `ReservoirSampler(capacity)` keeps a uniform sample of
live request inputs (`offer(batch)`, `snapshot()`, `save(path)` only when asked).

Profiling::

    report = optimize.profile_arms(
        [optimize.ProfileArm("onnxruntime/fp32", fp32_model, "onnxruntime", "fp32"),
         optimize.ProfileArm("onnxruntime/int8-dynamic", int8_model, "onnxruntime",
                             "int8-dynamic")],
        max_batch_size=32,
        settings=optimize.ProfileSettings(latency_budget_ms=20.0),
    )
    optimize.write_report(report, Path("profile/"))  # profile.md, .json, three PNGs
    report.best_for("throughput")

On disk, beside the fp32 artifact (see `store`)::

    <repo>/<model>/<version>/variants/<backend>.<variant>/{artifact, gate.json}

Variants known (see `catalog`): onnxruntime optimized, int8-dynamic, int8-static,
fp16 (GPU providers only); openvino int8 (NNCF), bf16 and fp16 (where the CPU plugin
computes in them); tflite int8 and fp16 (from <version>/source.keras or
<version>/saved_model/, with tensorflow).

Optional libraries: onnx, sympy, onnxconverter-common, nncf, matplotlib (the
`optimize` extra) and tensorflow (the `convert` extra); what is missing makes the
variants that need it refused, with the package to install.
"""

from __future__ import annotations

from infergate.optimize.build import (
    ADMITTED,
    FAILED,
    REFUSED,
    REJECTED,
    References,
    VariantOutcome,
    build_variant,
    build_variants,
    serving_options,
    spec_of,
)
from infergate.optimize.catalog import Availability, availability, known_variants, plan, require
from infergate.optimize.data import (
    DataSet,
    GateData,
    dataset,
    load_npz,
    prepare,
    random_dataset,
)
from infergate.optimize.gate import (
    GateFigures,
    GateThresholds,
    GateVerdict,
    compare,
    judge,
    run_model,
)
from infergate.optimize.machine import Machine, probe_machine
from infergate.optimize.profiler import (
    DEFAULT_PRICES_PER_HOUR,
    Measurement,
    ProfileArm,
    ProfileReport,
    ProfileSettings,
    choose_best,
    profile_arms,
    summarize,
)
from infergate.optimize.progress import ProgressCallback, ProgressSpan, no_progress
from infergate.optimize.report import ReportFiles, variants_markdown, write_report
from infergate.optimize.reservoir import ReservoirSampler
from infergate.optimize.store import (
    StoredVariant,
    clean_leftovers,
    list_variants,
    remove_variant,
    servable_variants,
)

__all__ = [
    "ADMITTED",
    "DEFAULT_PRICES_PER_HOUR",
    "FAILED",
    "REFUSED",
    "REJECTED",
    "Availability",
    "DataSet",
    "GateData",
    "GateFigures",
    "GateThresholds",
    "GateVerdict",
    "Machine",
    "Measurement",
    "ProfileArm",
    "ProfileReport",
    "ProfileSettings",
    "ProgressCallback",
    "ProgressSpan",
    "References",
    "ReportFiles",
    "ReservoirSampler",
    "StoredVariant",
    "VariantOutcome",
    "availability",
    "build_variant",
    "build_variants",
    "choose_best",
    "clean_leftovers",
    "compare",
    "dataset",
    "judge",
    "known_variants",
    "list_variants",
    "load_npz",
    "no_progress",
    "plan",
    "prepare",
    "probe_machine",
    "profile_arms",
    "random_dataset",
    "remove_variant",
    "require",
    "run_model",
    "servable_variants",
    "serving_options",
    "spec_of",
    "summarize",
    "variants_markdown",
    "write_report",
]
