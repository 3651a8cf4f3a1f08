"""Turn a model on disk into a ready ModelVersion: pick a backend, load, check, warm up.

Blocking (runtimes load synchronously); the server calls it from a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from infergate import optimize
from infergate.backends.base import Backend, BackendOptions, LoadedModel
from infergate.gateway.core.arms import Arm
from infergate.gateway.core.batching import queue_delay_problem
from infergate.gateway.core.config_fields import unacted_fields
from infergate.gateway.core.config_spec import config_from_artifact, reconcile, spec_from_config
from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.repository import ModelSource
from infergate.gateway.core.runtime_config import configured
from infergate.gateway.core.warmup import warm_up, with_rows
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import ModelSpec, Tensors

log = logging.getLogger(__name__)

# Triton platform names that pin a backend, for configs written for Triton.
_PLATFORM_BACKENDS = {"onnxruntime_onnx": "onnxruntime", "tensorflow_tflite": "tflite"}
_BACKEND_PLATFORMS = {v: k for k, v in _PLATFORM_BACKENDS.items()}


def choose_backends(source: ModelSource, backends: Mapping[str, Backend]) -> list[Backend]:
    """The backends to serve a model on, in order of preference: each becomes an arm.

    `backend` pins one (a Triton `platform` does too, unless `allowed_backends` is
    set: such a config is ours and says what it means). Unpinned, every allowed
    backend (empty `allowed_backends`: every available one) that finds an artifact
    it loads, in entry-point order.
    """
    config = source.config
    where = f"model '{source.name}' version {source.version}"
    pinned = ""
    allowed: list[str] = []
    if config is not None:
        allowed = list(config.allowed_backends)
        pinned = config.backend or ("" if allowed else _PLATFORM_BACKENDS.get(config.platform, ""))
    if pinned and allowed and pinned not in allowed:
        raise ModelLoadError(
            f"{where}: backend '{pinned}' is pinned but allowed_backends {allowed} leave it out"
        )
    if pinned:
        backend = backends.get(pinned)
        if backend is None:
            raise ModelLoadError(
                f"model '{source.name}' asks for backend '{pinned}', which is not available "
                f"here (available: {sorted(backends)})"
            )
        if backend.find_artifact(source.version_dir) is None:
            raise ModelLoadError(
                f"{where}: backend '{pinned}' needs "
                f"one of {list(backend.artifact_names)} in {source.version_dir}"
            )
        return [backend]
    candidates = [b for name, b in backends.items() if not allowed or name in allowed]
    if not candidates:
        raise ModelLoadError(
            f"{where}: none of its allowed_backends {allowed} is available here "
            f"(available: {sorted(backends)})"
        )
    found = [b for b in candidates if b.find_artifact(source.version_dir) is not None]
    if found:
        return found
    wanted = sorted({a for b in candidates for a in b.artifact_names})
    raise ModelLoadError(
        f"{where}: no artifact any {'allowed' if allowed else 'available'} backend "
        f"can load in {source.version_dir} (looked for {wanted})"
    )


def load_model(
    source: ModelSource,
    backends: Mapping[str, Backend],
    options: BackendOptions,
    default_max_batch_size: int,
) -> ModelVersion:
    """Load on every backend that may run it, check, warm up and profile each.

    The first backend that loads defines the config where the model has none; every
    other one must agree with it (same tensors under the config's names). A backend
    that fails to load is left out, with its reason kept for DescribeModel; the
    model fails only when none loads.
    """
    started = time.monotonic()
    delay_problem = None if source.config is None else queue_delay_problem(source.config)
    if delay_problem is not None:
        raise ModelLoadError(f"model '{source.name}' version {source.version}: {delay_problem}")
    candidates = choose_backends(source, backends)
    kinds = _wanted_device_kinds(source.config)
    if kinds == {mc.ModelInstanceGroup.KIND_CPU}:
        options = replace(options, use_gpu=False)
    config: mc.ModelConfig | None = None
    spec: ModelSpec | None = None
    arms: list[Arm] = []
    errors: dict[str, str] = {}
    for backend in candidates:
        artifact = backend.find_artifact(source.version_dir)
        assert artifact is not None  # choose_backends checked
        runtime: LoadedModel | None = None
        try:
            runtime = backend.load(artifact, options_for_model(options, config or source.config))
            if config is None:
                config = _config_for(source, runtime, default_max_batch_size)
                if not config.platform:
                    config.platform = _BACKEND_PLATFORMS.get(backend.name, backend.name)
            arm, arm_spec = _start_arm(backend.name, "fp32", runtime, config, source, kinds)
        except Exception as exc:
            if runtime is not None:
                runtime.close()
            if len(candidates) == 1:
                raise
            errors[backend.name] = str(exc)
            log.warning("model %s: backend %s left out: %s", source.name, backend.name, exc)
            if not arms:
                config = None  # the next backend defines it afresh
            continue
        spec = spec or arm_spec
        arms.append(arm)
        arms.extend(
            _variant_arms(
                backend, options_for_model(options, config), config, source, kinds, errors
            )
        )
    if not arms or config is None or spec is None:
        raise ModelLoadError(
            f"model '{source.name}' version {source.version} loads on no backend: "
            + "; ".join(f"{name}: {why}" for name, why in errors.items())
        )
    ignored = unacted_fields(config)
    if source.unknown_fields or ignored:
        log.warning(
            "model %s: config fields infergate does not act on: %s",
            source.name,
            ", ".join([*source.unknown_fields, *ignored]),
        )
    log.info(
        "loaded model %s version %s on %s in %.2fs",
        source.name,
        source.version,
        ", ".join(a.name for a in arms),
        time.monotonic() - started,
    )
    return ModelVersion(
        name=source.name,
        version=source.version,
        config=config,
        spec=spec,
        arms=arms,
        platform=config.platform,
        arm_errors=errors,
        instances=instance_count(config),
        capture=optimize.ReservoirSampler(config.capture_rows) if config.capture_rows else None,
    )


def _start_arm(
    backend: str,
    variant: str,
    runtime: LoadedModel,
    config: mc.ModelConfig,
    source: ModelSource,
    kinds: set[int],
) -> tuple[Arm, ModelSpec]:
    """Check a loaded runtime against the config, warm it up and profile it: an arm."""
    arm_spec = reconcile(config, runtime.inputs, runtime.outputs)
    runtime = configured(runtime, config, source.folder)  # reshape, sequences, labels
    if kinds == {mc.ModelInstanceGroup.KIND_GPU} and runtime.device == "cpu":
        raise ModelLoadError(
            f"instance_group asks for KIND_GPU, but {backend} runs it on the CPU here"
        )
    canary = warm_up(runtime, arm_spec, config, source.folder)
    arm = Arm(backend, runtime.device, variant, runtime, canary=canary)
    if canary is not None:
        profile(arm, arm_spec, canary)
    return arm, arm_spec


def _variant_arms(
    backend: Backend,
    options: BackendOptions,
    config: mc.ModelConfig,
    source: ModelSource,
    kinds: set[int],
    errors: dict[str, str],
) -> list[Arm]:
    """Arms for the variants of this backend that passed the accuracy gate and whose
    fp32 source is unchanged (infergate.optimize): loaded from what the optimization
    stored, never rebuilt. A variant that fails to load is left out with its reason."""
    arms = []
    for variant in optimize.servable_variants(source.version_dir, backend.name):
        assert variant.artifact is not None  # servable: it has one
        runtime: LoadedModel | None = None
        try:
            runtime = backend.load(variant.artifact, variant.options(options))
            arm, _ = _start_arm(backend.name, variant.variant, runtime, config, source, kinds)
        except Exception as exc:
            if runtime is not None:
                runtime.close()
            errors[f"{backend.name}/{variant.variant}"] = str(exc)
            log.warning("model %s: variant %s left out: %s", source.name, variant.name, exc)
            continue
        arms.append(arm)
    return arms


def options_for_model(options: BackendOptions, config: mc.ModelConfig | None) -> BackendOptions:
    """The options for one model: its config's tensors as expected_inputs/outputs, and
    its `parameters` (string values) over `extra`, so that a config can set a
    backend's per-model settings (e.g. OpenVINO's performance_hint)."""
    if config is None:
        return options
    declared = spec_from_config(config) if (config.input or config.output) else None
    parameters = {key: p.string_value for key, p in config.parameters.items()}
    return replace(
        options,
        extra={**options.extra, **parameters},
        expected_inputs=declared.inputs if declared else None,
        expected_outputs=declared.outputs if declared else None,
    )


def _config_for(
    source: ModelSource, runtime: LoadedModel, default_max_batch_size: int
) -> mc.ModelConfig:
    """The model's config: as written, with tensors from the artifact where it has none."""
    if source.config is None:
        return config_from_artifact(
            source.name, runtime.inputs, runtime.outputs, default_max_batch_size
        )
    config = mc.ModelConfig()
    config.CopyFrom(source.config)
    if not config.input and not config.output:
        # A config with settings only: tensors come from the artifact.
        derived = config_from_artifact(
            source.name,
            runtime.inputs,
            runtime.outputs,
            config.max_batch_size or default_max_batch_size,
        )
        config.input.extend(derived.input)
        config.output.extend(derived.output)
        if not config.max_batch_size:
            config.max_batch_size = derived.max_batch_size
    return config


def profile(arm: Arm, spec: ModelSpec, sample: Tensors, runs: int = 3) -> None:
    """Seed the arm's latency model over a few batch sizes, so routing starts informed.

    `sample` is what the arm ran at warm-up, grown to each size. The median of a
    few runs per size goes in: one stall on a busy machine must not teach the
    router a wrong slope before it has served anything.
    """
    batches = spec.max_batch_size > 0
    sizes = sorted({1, max(1, spec.max_batch_size // 4), max(1, spec.max_batch_size)})
    for rows in sizes if batches else [1]:
        inputs = with_rows(sample, rows) if batches else sample
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            arm.runtime.infer(inputs)
            times.append(time.perf_counter() - started)
        arm.latency.observe(rows, float(np.median(times)))


def instance_count(config: mc.ModelConfig) -> int | None:
    """Batches of the model that may run side by side, from its instance groups
    (Triton's count, 1 when unset); None: no groups, the gateway's setting applies."""
    if not config.instance_group:
        return None
    return sum(max(1, group.count) for group in config.instance_group)


def _wanted_device_kinds(config: mc.ModelConfig | None) -> set[int]:
    """The instance group kinds a config insists on (KIND_CPU, KIND_GPU); empty: any."""
    if config is None:
        return set()
    kinds: set[int] = {int(group.kind) for group in config.instance_group}
    if kinds and kinds <= {mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_GPU}:
        return kinds
    return set()  # KIND_AUTO / KIND_MODEL anywhere: the backends decide
