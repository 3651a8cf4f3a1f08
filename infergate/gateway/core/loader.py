"""Turn a model on disk into a ready ModelVersion: pick a backend, load, check, warm up.

Blocking (runtimes load synchronously); the server calls it from a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np

from infergate.backends.base import Backend, BackendOptions, LoadedModel
from infergate.gateway.core import datatypes
from infergate.gateway.core.arms import Arm
from infergate.gateway.core.errors import ModelLoadError
from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.repository import ModelSource
from infergate.gateway.core.spec import (
    VARIABLE,
    ModelSpec,
    config_from_artifact,
    reconcile,
)
from infergate.protocol import model_config_pb2 as mc

log = logging.getLogger(__name__)

# Triton platform names that pin a backend, for configs written for Triton.
_PLATFORM_BACKENDS = {"onnxruntime_onnx": "onnxruntime", "tensorflow_tflite": "tflite"}
_BACKEND_PLATFORMS = {v: k for k, v in _PLATFORM_BACKENDS.items()}


def choose_backend(source: ModelSource, backends: Mapping[str, Backend]) -> Backend:
    """The backend to serve a model on: the pinned one, else the first allowed that can load.

    `backend` pins one (a Triton `platform` does too, unless `allowed_backends` is
    set: such a config is ours and says what it means). `allowed_backends` limits
    the choice; empty allows every available backend. Unpinned, the first allowed
    backend (in entry-point order) that finds an artifact it loads is taken.
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
        return backend
    candidates = [b for name, b in backends.items() if not allowed or name in allowed]
    if not candidates:
        raise ModelLoadError(
            f"{where}: none of its allowed_backends {allowed} is available here "
            f"(available: {sorted(backends)})"
        )
    for backend in candidates:
        if backend.find_artifact(source.version_dir) is not None:
            return backend
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
    """Load, check the config against the artifact, warm up; ModelLoadError on any failure."""
    started = time.monotonic()
    backend = choose_backend(source, backends)
    artifact = backend.find_artifact(source.version_dir)
    assert artifact is not None  # choose_backend checked
    runtime = backend.load(artifact, options.for_model(source.config))
    try:
        if source.config is None:
            config = config_from_artifact(
                source.name, runtime.inputs, runtime.outputs, default_max_batch_size
            )
            config.backend = backend.name
        else:
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
            if not config.backend:
                config.backend = backend.name
        if not config.platform:
            config.platform = _BACKEND_PLATFORMS.get(backend.name, backend.name)
        spec = reconcile(config, runtime.inputs, runtime.outputs)
        warm_up(runtime, spec, source.name)
    except Exception:
        runtime.close()
        raise
    log.info(
        "loaded model %s version %s on %s (%s) in %.2fs",
        source.name,
        source.version,
        backend.name,
        runtime.device,
        time.monotonic() - started,
    )
    return ModelVersion(
        name=source.name,
        version=source.version,
        config=config,
        spec=spec,
        arms=[Arm(backend.name, runtime.device, "fp32", runtime)],
        platform=config.platform,
    )


def warm_up(runtime: LoadedModel, spec: ModelSpec, name: str) -> None:
    """One inference on zeros at batch 1: proves the model runs and pays lazy set-up."""
    inputs: dict[str, np.ndarray] = {}
    for tensor in spec.inputs:
        shape = tuple(1 if d == VARIABLE else d for d in tensor.shape)
        dtype = datatypes.from_name(tensor.datatype).numpy
        if tensor.datatype == "BYTES":
            inputs[tensor.name] = np.full(shape, b"", dtype=object)
        else:
            inputs[tensor.name] = np.zeros(shape, dtype=dtype)
    try:
        outputs = runtime.infer(inputs)
    except Exception as exc:
        raise ModelLoadError(f"model '{name}' failed its warm-up inference: {exc}") from exc
    missing = set(spec.output_names()) - set(outputs)
    if missing:
        raise ModelLoadError(f"model '{name}' did not return outputs {sorted(missing)}")
