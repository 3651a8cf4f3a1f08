"""Build, gate and store variants: the one entry point for "optimize this model".

Blocking, and long (seconds to minutes): run it in a worker process or thread.
`build_variant` makes one variant and raises for what the caller asked wrongly;
`build_variants` makes every one that can be made here and reports each as an
outcome (admitted, rejected, refused here, failed), never stopping at the first.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infergate.backends.base import Backend, BackendOptions, LoadedModel
from infergate.backends.discovery import discover
from infergate.optimize import catalog, store
from infergate.optimize.data import DataSet, GateData, check
from infergate.optimize.gate import (
    GATE_BATCH,
    GateFigures,
    GateThresholds,
    GateVerdict,
    compare,
    judge,
    run_model,
)
from infergate.optimize.machine import Machine, probe_machine
from infergate.optimize.progress import ProgressCallback, ProgressSpan, no_progress
from infergate.optimize.recipe import BuildContext
from infergate.schema.errors import GatewayError, PreconditionFailed
from infergate.schema.tensors import ModelSpec

log = logging.getLogger(__name__)

ADMITTED, REJECTED, REFUSED, FAILED = "admitted", "rejected", "refused", "failed"
# Where the fp32 reference is looked for when the variant's own backend has no fp32
# artifact (a tflite variant of a model served from model.onnx).
_REFERENCE_BACKENDS = ("onnxruntime", "openvino", "tflite")


@dataclass(frozen=True)
class VariantOutcome:
    backend: str
    variant: str
    status: str  # ADMITTED, REJECTED, REFUSED (cannot be made here), FAILED
    reason: str  # why refused or failed; the verdict's first line otherwise
    figures: GateFigures | None = None
    verdict: GateVerdict | None = None
    stored: store.StoredVariant | None = None
    build_s: float = 0.0
    gate_s: float = 0.0
    runtime: Mapping[str, Any] = field(default_factory=dict)  # device, xnnpack, ...

    @property
    def name(self) -> str:
        return f"{self.backend}.{self.variant}"


class References:
    """fp32 outputs on a validation set, computed once per backend and artifact."""

    def __init__(self) -> None:
        # Keyed by the data set's id; the entry holds the data set, so the id stays its.
        self._cache: dict[tuple[str, str, int], tuple[str, dict[str, np.ndarray], DataSet]] = {}

    def get(
        self,
        version_dir: Path,
        backend: str,
        spec: ModelSpec,
        data: DataSet,
        options: BackendOptions,
        backends: dict[str, Backend],
        progress: ProgressSpan,
    ) -> tuple[str, dict[str, np.ndarray]]:
        """(what the reference is, its outputs): the data set's expected outputs when it
        carries them all, else the fp32 artifact run by `backend` (or another backend
        when that one has no fp32 artifact)."""
        if data.expected and all(t.name in data.expected for t in spec.outputs):
            return f"expected outputs in {data.source}", dict(data.expected)
        for name in dict.fromkeys((backend, *_REFERENCE_BACKENDS)):
            runtime = _backend(name, backends, required=False)
            artifact = runtime.find_artifact(version_dir) if runtime is not None else None
            if runtime is None or artifact is None:
                continue
            key = (name, str(artifact), id(data))
            if key not in self._cache:
                progress.report("reference", 0.0, f"fp32 outputs from {name} {artifact.name}")
                model = _load(runtime, artifact, options, f"the fp32 {artifact.name}")
                try:
                    outputs = run_model(model, spec, data, GATE_BATCH, progress, "reference")
                finally:
                    model.close()
                self._cache[key] = (f"{name} fp32 {artifact.name}", outputs, data)
            what, outputs, _ = self._cache[key]
            return what, outputs
        raise PreconditionFailed(f"no fp32 artifact in {version_dir} to compare variants with")


def serving_options(options: BackendOptions | None, spec: ModelSpec) -> BackendOptions:
    """The options as the loader would give them: the spec's tensor names expected,
    so that backends whose artifacts name tensors differently (tflite) map them."""
    options = options or BackendOptions()
    if options.expected_inputs is None:
        options = dataclasses.replace(
            options, expected_inputs=spec.inputs, expected_outputs=spec.outputs
        )
    return options


def build_variant(
    version_dir: Path,
    spec: ModelSpec,
    backend: str,
    variant: str,
    data: GateData,
    *,
    options: BackendOptions | None = None,
    thresholds: GateThresholds | None = None,
    machine: Machine | None = None,
    backends: Mapping[str, Backend] | None = None,
    progress: ProgressCallback | ProgressSpan = no_progress,
    references: References | None = None,
    keep_rejected_artifact: bool = False,
) -> VariantOutcome:
    """Build one variant, gate it, store it (admitted or rejected) and say how it went.

    Raises InvalidInput for an unknown variant name, PreconditionFailed when it cannot
    be made here or from this model (why), and whatever the progress callback raises.
    """
    span = progress if isinstance(progress, ProgressSpan) else ProgressSpan(progress)
    thresholds = thresholds or GateThresholds()
    options = serving_options(options, spec)
    machine = machine or probe_machine(options)
    recipe = catalog.require(backend, variant, machine, version_dir)
    check(spec, data.calibration, "calibration data")
    check(spec, data.validation, "validation data")
    pool = backends if isinstance(backends, dict) else dict(backends or {})
    runtime = _backend(backend, pool, required=True)
    assert runtime is not None
    name = store.folder_name(backend, variant)
    span.report("build", 0.0, f"{name}: building")
    with (
        store.staging(version_dir, backend, variant) as stage,
        tempfile.TemporaryDirectory(prefix="infergate-optimize-") as work,
    ):
        started = time.perf_counter()
        context = BuildContext(
            version_dir,
            stage.path,
            Path(work),
            spec,
            data.calibration,
            machine,
            options,
            span.sub(0.0, 0.6),
        )
        try:
            built = recipe.build(context)
        except GatewayError:
            raise
        except Exception as exc:  # the converters raise anything: say which and why
            raise PreconditionFailed(
                f"{name} could not be made from this model: {type(exc).__name__}: {exc}"
            ) from exc
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        ref_name, reference = (references or References()).get(
            version_dir,
            backend,
            spec,
            data.validation,
            options,
            pool,
            span.sub(0.6, 0.7),
        )
        serving = dataclasses.replace(options, extra={**options.extra, **built.parameters})
        span.report("gate", 0.7, f"{name}: running the validation set")
        model = _load(runtime, stage.path / built.artifact, serving, name)
        try:
            _check_names(model, spec, name)
            outputs = run_model(model, spec, data.validation, GATE_BATCH, span.sub(0.7, 0.95))
            facts = _runtime_facts(model)
        finally:
            model.close()
        figures = compare(spec, reference, outputs, data.validation.labels, ref_name)
        verdict = judge(figures, thresholds)
        gate_s = time.perf_counter() - started
        if not verdict.admitted and not keep_rejected_artifact:
            _empty(stage.path)
        record = {
            "format": store.FORMAT,
            "backend": backend,
            "variant": variant,
            "summary": recipe.summary,
            "artifact": built.artifact if (verdict.admitted or keep_rejected_artifact) else None,
            "parameters": dict(built.parameters),
            "admitted": verdict.admitted,
            "verdict": verdict.to_dict(),
            "figures": figures.to_dict(),
            "thresholds": thresholds.to_dict(),
            "source": store.fingerprint(version_dir, built.sources),
            "data": data.describe(),
            "build": {
                "seconds": round(build_s, 3),
                "details": dict(built.details),
                "backend_version": runtime.version(),
            },
            "gate": {"seconds": round(gate_s, 3)},
            "runtime": facts,
            "machine": machine.summary(),
            "created_unix": round(time.time(), 3),
        }
        span.report("store", 0.97, f"{name}: {'admitted' if verdict.admitted else 'rejected'}")
        stored = stage.commit(record)
    span.done("store", f"{name}: stored")
    return VariantOutcome(
        backend,
        variant,
        ADMITTED if verdict.admitted else REJECTED,
        "; ".join(verdict.reasons),
        figures,
        verdict,
        stored,
        build_s,
        gate_s,
        facts,
    )


def build_variants(
    version_dir: Path,
    spec: ModelSpec,
    data: GateData,
    *,
    backend_names: Iterable[str] | None = None,
    variants: Iterable[str] | None = None,
    options: BackendOptions | None = None,
    thresholds: GateThresholds | None = None,
    machine: Machine | None = None,
    backends: Mapping[str, Backend] | None = None,
    progress: ProgressCallback = no_progress,
    keep_rejected_artifact: bool = False,
) -> list[VariantOutcome]:
    """Every known variant of these backends (default: all) with these names (default:
    all): made, gated and stored where possible, refused with the reason elsewhere.
    Unknown names are InvalidInput before anything is built."""
    thresholds = thresholds or GateThresholds()
    options = serving_options(options, spec)
    machine = machine or probe_machine(options)
    planned = catalog.plan(version_dir, machine, backend_names, variants)
    span = ProgressSpan(progress)
    references = References()
    pool = dict(backends or {})  # backends found once, shared by every variant
    outcomes: list[VariantOutcome] = []
    for i, item in enumerate(planned):
        part = span.sub(i / len(planned), (i + 1) / len(planned))
        if not item.available:
            part.done("build", f"{item.name}: not available here: {item.reason}")
            outcomes.append(VariantOutcome(item.backend, item.variant, REFUSED, item.reason))
            continue
        try:
            outcomes.append(
                build_variant(
                    version_dir,
                    spec,
                    item.backend,
                    item.variant,
                    data,
                    options=options,
                    thresholds=thresholds,
                    machine=machine,
                    backends=pool,
                    progress=part,
                    references=references,
                    keep_rejected_artifact=keep_rejected_artifact,
                )
            )
        except GatewayError as exc:
            log.info("%s: %s", item.name, exc)
            part.done("build", f"{item.name}: failed: {exc}")
            outcomes.append(VariantOutcome(item.backend, item.variant, FAILED, str(exc)))
    return outcomes


def spec_of(model: LoadedModel, max_batch_size: int) -> ModelSpec:
    """A ModelSpec from a loaded model's own view, for callers without a config."""
    return ModelSpec(tuple(model.inputs), tuple(model.outputs), max_batch_size)


def _backend(name: str, pool: dict[str, Backend], required: bool) -> Backend | None:
    """The named backend from the pool, discovered (and kept there) if absent."""
    if name in pool:
        return pool[name]
    found = discover(only=[name])
    if name in found.backends:
        pool[name] = found.backends[name]
        return pool[name]
    if not required:
        return None
    why = next((m.reason for m in found.unavailable if m.name == name), "not installed")
    raise PreconditionFailed(f"the {name} backend is not available here: {why}")


def _load(runtime: Backend, artifact: Path, options: BackendOptions, what: str) -> LoadedModel:
    try:
        return runtime.load(artifact, options)
    except GatewayError as exc:
        raise PreconditionFailed(f"{what} does not load in {runtime.name}: {exc}") from exc


def _check_names(model: LoadedModel, spec: ModelSpec, what: str) -> None:
    have = {t.name for t in model.inputs}
    missing = [t.name for t in spec.inputs if t.name not in have]
    if missing:
        raise PreconditionFailed(
            f"{what}: it takes inputs {sorted(have)}, not the model's {missing}"
        )


def _runtime_facts(model: LoadedModel) -> dict[str, Any]:
    facts: dict[str, Any] = {"device": model.device}
    for attribute in ("xnnpack", "providers", "performance_hint", "infer_requests"):
        value = getattr(model, attribute, None)
        if value is not None:
            facts[attribute] = value
    return facts


def _empty(folder: Path) -> None:
    """Remove a rejected variant's files; its gate.json is written after."""
    for path in folder.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
