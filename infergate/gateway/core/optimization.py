"""Making a serving model faster while it serves: variants built, gated, then served.

An optimization takes a serving version, builds the variants asked for
(infergate.optimize: int8, fp16, bf16, graph-optimized) on a worker thread, runs
each through the accuracy gate against fp32, stores them beside the fp32 artifact,
and reloads the version through ModelControl, so the admitted ones join the router
as arms (the loader serves what was stored, never rebuilding). Progress goes to a
callback as it happens. Profiling measures every arm of a serving version in this
process, on a worker thread too.

Both run real work beside serving: building and calibrating use the CPU the
gateway serves with, and profiling calls the live runtimes. They are operator
actions, one optimization per model at a time.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infergate import optimize as opt
from infergate.backends.base import BackendOptions
from infergate.gateway.core.lifecycle import ModelLifecycle
from infergate.gateway.core.loader import options_for_model
from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.model_control import ModelControl, ModelView
from infergate.gateway.core.registry import ModelState
from infergate.schema.errors import (
    InvalidInput,
    ModelNotReady,
    PreconditionFailed,
    shown,
    shown_list,
)

log = logging.getLogger(__name__)

# (stage, fraction of the whole, message)
Progress = Callable[[str, float, str], None]


@dataclass(frozen=True)
class OptimizeRequest:
    name: str
    version: str  # "": the newest serving one
    variants: tuple[str, ...]  # empty: all
    backends: tuple[str, ...]  # empty: every backend serving the model
    calibration_npz: bytes  # empty with use_captured
    validation_npz: bytes  # empty: the calibration set is split
    thresholds: Mapping[str, float] = field(default_factory=dict)
    # Calibrate on the sample of live requests the model keeps (config capture_rows).
    use_captured: bool = False


@dataclass(frozen=True)
class Optimized:
    outcomes: list[opt.VariantOutcome]
    arms: list[str]  # serving once done


@dataclass(frozen=True)
class ProfileRequest:
    name: str
    version: str
    batch_sizes: tuple[int, ...] = ()
    concurrency: tuple[int, ...] = ()
    prices_per_hour: Mapping[str, float] = field(default_factory=dict)
    latency_budget_ms: float = 0.0
    seconds_per_case: float = 0.0


class ModelOptimizer:
    def __init__(self, control: ModelControl, lifecycle: ModelLifecycle) -> None:
        self._control = control
        self._lifecycle = lifecycle
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[Optimized]] = set()

    def start(self, request: OptimizeRequest, progress: Progress) -> asyncio.Task[Optimized]:
        """optimize() as a task of its own that runs to its end, even if whoever
        started it stops waiting: variants half stored and a model not reloaded would
        leave the repository and what serves apart. aclose() waits for it."""
        task = asyncio.get_running_loop().create_task(self.optimize(request, progress))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def optimize(self, request: OptimizeRequest, progress: Progress) -> Optimized:
        """Build, gate and store the variants, then serve the admitted ones.

        Refused before any work: a model that does not serve, a second optimization of
        the same model, unknown variant names, variants none of which can be made here
        (FailedPrecondition with why), thresholds out of range, calibration or
        validation data that does not fit the model.
        """
        name = request.name
        if name in self._running:
            raise PreconditionFailed(
                f"model {shown(name)} is being optimized already; wait for it to finish"
            )
        model = self._serving(name, request.version)
        thresholds = opt.GateThresholds.from_mapping(dict(request.thresholds))
        options = options_for_model(self._lifecycle.options, model.config)
        backends = request.backends or tuple(dict.fromkeys(a.backend for a in model.arms))
        unknown = [b for b in backends if b not in self._lifecycle.backends]
        if unknown:
            raise InvalidInput(
                f"backends {shown_list(unknown, each=shown)} are not available here; "
                f"available: {sorted(self._lifecycle.backends)}"
            )
        version_dir = self._version_dir(model)
        self._running.add(name)
        try:
            with tempfile.TemporaryDirectory(prefix="infergate-optimize-") as scratch:
                outcomes = await asyncio.to_thread(
                    self._build,
                    request,
                    model,
                    version_dir,
                    backends,
                    options,
                    thresholds,
                    Path(scratch),
                    _on_loop(progress),
                )
            progress("load", 1.0, f"reloading {name} version {model.version} with its variants")
            reloaded = await self._control.reload(name)
        finally:
            self._running.discard(name)
        admitted = [o.name for o in outcomes if o.status == opt.ADMITTED]
        log.info(
            "model %s version %s optimized: %s admitted",
            name,
            model.version,
            ", ".join(admitted) or "none",
        )
        return Optimized(outcomes, [arm.name for arm in reloaded.arms])

    def _build(
        self,
        request: OptimizeRequest,
        model: ModelVersion,
        version_dir: Path,
        backends: Sequence[str],
        options: BackendOptions,
        thresholds: opt.GateThresholds,
        scratch: Path,
        progress: Progress,
    ) -> list[opt.VariantOutcome]:
        machine = opt.probe_machine(options)
        planned = opt.plan(version_dir, machine, backends, request.variants or None)
        if request.variants and not any(item.available for item in planned):
            raise PreconditionFailed(
                "none of the variants asked for can be made here: "
                + "; ".join(f"{i.backend}.{i.variant}: {i.reason}" for i in planned)
            )
        progress("prepare", 0.0, "checking the calibration and validation data")
        if request.use_captured:
            data = opt.prepare(model.spec, _captured(model))
        else:
            data = opt.prepare(
                model.spec,
                _written(scratch / "calibration.npz", request.calibration_npz, "calibration"),
                _written(scratch / "validation.npz", request.validation_npz, "validation")
                if request.validation_npz
                else None,
            )
        return opt.build_variants(
            version_dir,
            model.spec,
            data,
            backend_names=backends,
            variants=request.variants or None,
            options=options,
            thresholds=thresholds,
            machine=machine,
            backends=self._lifecycle.backends,
            progress=progress,
        )

    async def profile(self, request: ProfileRequest) -> opt.ProfileReport:
        """Every arm of a serving version, measured in this process."""
        model = self._serving(request.name, request.version)
        settings = opt.ProfileSettings(
            batch_sizes=request.batch_sizes or opt.ProfileSettings.batch_sizes,
            concurrency=request.concurrency or opt.ProfileSettings.concurrency,
            duration_s=request.seconds_per_case or opt.ProfileSettings.duration_s,
            latency_budget_ms=request.latency_budget_ms or None,
            prices_per_hour={**opt.DEFAULT_PRICES_PER_HOUR, **request.prices_per_hour},
        )
        arms = [
            opt.ProfileArm(arm.name, arm.runtime, arm.backend, arm.variant) for arm in model.arms
        ]
        return await asyncio.to_thread(
            opt.profile_arms,
            arms,
            max(1, model.spec.max_batch_size),
            settings,
            None,
            f"{model.name}:{model.version}",
        )

    async def profile_files(self, request: ProfileRequest) -> dict[str, bytes]:
        """profile(), as its report files: profile.md, profile.json and PNG plots."""
        report = await self.profile(request)

        def written() -> dict[str, bytes]:
            with tempfile.TemporaryDirectory(prefix="infergate-profile-") as folder:
                opt.write_report(report, Path(folder))
                return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}

        return await asyncio.to_thread(written)

    def stored_by_version(self, view: ModelView) -> dict[str, list[opt.StoredVariant]]:
        """What optimizations stored for each version on disk (blocking: reads files
        and hashes each fp32 source to tell stale variants)."""
        repository = self._control.repository
        if repository is None:
            return {}
        return {v: opt.list_variants(repository / view.name / v) for v in view.on_disk}

    def _serving(self, name: str, version: str) -> ModelVersion:
        entry = self._lifecycle.registry.entry(name)
        if entry.state is not ModelState.READY:
            why = f": {entry.reason}" if entry.reason else ""
            raise ModelNotReady(f"model {shown(name)} is {entry.state.value}{why}")
        return self._lifecycle.registry.get(name, version)

    def _version_dir(self, model: ModelVersion) -> Path:
        repository = self._control.repository
        if repository is None:
            raise PreconditionFailed(
                "variants are stored in the model repository; start the gateway with "
                "--model-repository FOLDER"
            )
        return repository / model.name / model.version


def _captured(model: ModelVersion) -> opt.DataSet:
    """The live requests the model kept (split into calibration and validation)."""
    if model.capture is None:
        raise PreconditionFailed(
            f"model {shown(model.name)} keeps no sample of its traffic: set capture_rows "
            "in its config (or send calibration data)"
        )
    if len(model.capture) < 2:
        raise PreconditionFailed(
            f"model {shown(model.name)} has captured {len(model.capture)} request rows so "
            "far; wait for more traffic (or send calibration data)"
        )
    return model.capture.snapshot()


def _written(path: Path, data: bytes, what: str) -> Path:
    if not data:
        raise InvalidInput(f"the {what} set is empty; send an .npz of the model's inputs")
    path.write_bytes(data)
    return path


def _on_loop(progress: Progress) -> Progress:
    """A progress callback the worker thread may call: it runs on the event loop."""
    loop = asyncio.get_running_loop()

    def report(stage: str, fraction: float, message: str) -> None:
        loop.call_soon_threadsafe(progress, stage, fraction, message)

    return report
