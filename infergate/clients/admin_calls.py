"""The calls of infergate.admin.v1.ModelAdmin, each written once for both faces.

Artifacts are streamed in 1 MiB chunks after a header that carries their sizes and
SHA-256, so a model of any size goes through without one huge message.

A new admin call is one function here that returns its Call (repeatable=False if it
changes anything), plus a line in each face of admin_client (`x = sync_rpc(calls.x)`
/ `async_rpc(...)`); `admin.call("Method", request)` sends any method by name.
OptimizeModel streams its progress, so its faces iterate (admin_client).
"""

from __future__ import annotations

import hashlib
import io
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from infergate.clients.transport import Call, same_response
from infergate.clients.upload_progress import Progress, ProgressBar
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import model_config_pb2 as mc

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Artifact:
    """A local file to upload under `filename` (its name in the version folder)."""

    filename: str
    path: Path
    size: int
    sha256: str

    @classmethod
    def from_path(cls, filename: str, path: Path) -> Artifact:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
        return cls(filename, path, path.stat().st_size, digest.hexdigest())


@dataclass(frozen=True)
class ConfigUpdate:
    """New values for the ModelConfig fields that `paths` name (UpdateModelConfig)."""

    config: mc.ModelConfig
    paths: tuple[str, ...]


def registration_messages(
    name: str,
    artifacts: Sequence[Artifact],
    config: mc.ModelConfig | None = None,
    version: str = "",
    progress: Progress | None = None,
    wait_replicas_s: float = 0.0,
) -> Iterator[apb.RegisterModelRequest]:
    """The RegisterModel stream: the header, then each artifact's chunks in order."""
    header = apb.RegisterModelHeader(name=name, version=version, wait_replicas_s=wait_replicas_s)
    if config is not None:
        header.config.CopyFrom(config)
    for artifact in artifacts:
        header.artifacts.add(filename=artifact.filename, sha256=artifact.sha256, size=artifact.size)
    yield apb.RegisterModelRequest(header=header)
    for artifact in artifacts:
        sent = 0
        if progress is not None:
            progress(artifact.filename, 0, artifact.size)
        with artifact.path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield apb.RegisterModelRequest(
                    chunk=apb.ArtifactChunk(filename=artifact.filename, data=chunk)
                )
                sent += len(chunk)
                if progress is not None:
                    progress(artifact.filename, sent, artifact.size)


def _artifacts(files: Mapping[str, Path | str] | Sequence[Artifact]) -> list[Artifact]:
    if isinstance(files, Mapping):
        return [Artifact.from_path(name, Path(path)) for name, path in files.items()]
    return list(files)


def register(
    name: str,
    files: Mapping[str, Path | str] | Sequence[Artifact],
    config: mc.ModelConfig | None = None,
    version: str = "",
    progress: Progress | bool | None = None,
    *,
    timeout_s: float | None = None,
    wait_replicas_s: float = 0.0,
) -> Call[apb.RegisterModelResponse]:
    """Upload a model version and serve it once it has loaded and warmed up.

    files: artifact names ("model.onnx", "model.tflite", "model.xml" ...) to local
    paths, or Artifacts. config: the model's config.pbtxt as a ModelConfig (None: keep
    the current one, or derive it from the artifact). version: "" for the next number.
    progress: True draws a progress bar on stderr; a callable gets (filename, sent,
    size) as chunks go out. No deadline unless `timeout_s`: a large upload takes as
    long as the network needs. Never retried. wait_replicas_s: see the note above
    `update`.
    """
    if progress is True:
        progress = ProgressBar()
    messages = registration_messages(
        name, _artifacts(files), config, version, progress or None, wait_replicas_s
    )
    return Call(
        "RegisterModel",
        messages,
        same_response,
        timeout_s,
        repeatable=False,
        default_deadline=False,
    )


# wait_replicas_s (register, update, unregister): with replicas following a shared
# registry, the call returns only once every live replica has applied the change,
# or fails after that many seconds (DEADLINE_EXCEEDED naming the replicas behind;
# the change itself is made). 0: do not wait. The call's deadline, unless given,
# leaves the wait a minute on top.
_WAIT_MARGIN_S = 60.0


def _waiting_deadline(timeout_s: float | None, wait_replicas_s: float) -> float | None:
    if timeout_s is None and wait_replicas_s > 0:
        return wait_replicas_s + _WAIT_MARGIN_S
    return timeout_s


def update(
    name: str,
    update: ConfigUpdate,
    *,
    timeout_s: float | None = None,
    wait_replicas_s: float = 0.0,
) -> Call[mc.ModelConfig]:
    """Change batching, cache or routing settings live (see `batching()`); the config now
    in effect. Never retried. wait_replicas_s: see the note above."""
    request = apb.UpdateModelConfigRequest(
        name=name, config=update.config, wait_replicas_s=wait_replicas_s
    )
    request.update_mask.paths.extend(update.paths)
    deadline = _waiting_deadline(timeout_s, wait_replicas_s)
    return Call("UpdateModelConfig", request, lambda r: r.config, deadline, repeatable=False)


def unregister(
    name: str,
    keep_files: bool = False,
    *,
    timeout_s: float | None = None,
    wait_replicas_s: float = 0.0,
) -> Call[apb.UnregisterModelResponse]:
    """Stop serving the model (queued requests finish) and remove its files unless
    `keep_files`. Never retried. wait_replicas_s: see the note above."""
    request = apb.UnregisterModelRequest(
        name=name, keep_files=keep_files, wait_replicas_s=wait_replicas_s
    )
    deadline = _waiting_deadline(timeout_s, wait_replicas_s)
    return Call("UnregisterModel", request, same_response, deadline, repeatable=False)


def list_models(*, timeout_s: float | None = None) -> Call[list[apb.ModelSummary]]:
    """Every model with its state, versions, backend and device."""
    return Call("ListModels", apb.ListModelsRequest(), lambda r: list(r.models), timeout_s)


def describe(name: str, *, timeout_s: float | None = None) -> Call[apb.DescribeModelResponse]:
    """One model in detail: versions, arms and their latencies, queue, cache, statistics."""
    return Call("DescribeModel", apb.DescribeModelRequest(name=name), same_response, timeout_s)


# ---- building config updates --------------------------------------------------------


def batching(
    *,
    max_queue_delay_us: int | None = None,
    max_batch_size: int | None = None,
    preferred_batch_sizes: Sequence[int] | None = None,
    max_queue_size: int | None = None,
    enabled: bool | None = None,
    cache: bool | None = None,
    cache_ttl_ms: int | None = None,
    routing_policy: str | None = None,
    fixed_arm: str | None = None,
) -> ConfigUpdate:
    """A ConfigUpdate for the settings given; None leaves a setting as it is.

    enabled=False turns dynamic batching off (and wins over the other batching
    settings); any batching setting turns it on for a model that batches.
    """
    config = mc.ModelConfig()
    paths: list[str] = []
    if enabled is False:
        paths.append("dynamic_batching")
    else:
        batch = config.dynamic_batching
        if enabled:
            paths.append("dynamic_batching")
            batch.SetInParent()
        if max_queue_delay_us is not None:
            batch.max_queue_delay_microseconds = max_queue_delay_us
            paths.append("dynamic_batching.max_queue_delay_microseconds")
        if preferred_batch_sizes is not None:
            batch.preferred_batch_size.extend(preferred_batch_sizes)
            paths.append("dynamic_batching.preferred_batch_size")
        if max_queue_size is not None:
            batch.default_queue_policy.max_queue_size = max_queue_size
            paths.append("dynamic_batching.default_queue_policy.max_queue_size")
    if max_batch_size is not None:
        config.max_batch_size = max_batch_size
        paths.append("max_batch_size")
    if cache is not None:
        config.response_cache.enable = cache
        paths.append("response_cache.enable")
    if cache_ttl_ms is not None:
        config.response_cache_ttl_ms = cache_ttl_ms
        paths.append("response_cache_ttl_ms")
    if routing_policy is not None:
        config.routing.policy = routing_policy
        paths.append("routing.policy")
    if fixed_arm is not None:
        config.routing.fixed_arm = fixed_arm
        paths.append("routing.fixed_arm")
    return ConfigUpdate(config, tuple(paths))


# ---- variants and profiles -------------------------------------------------------------

# progress(stage, fraction of the whole, message): called as an optimization goes.
StageProgress = Callable[[str, float, str], None]
Samples = Path | str | bytes | Mapping[str, np.ndarray]


def optimize_request(
    name: str,
    calibration: Samples | None,
    validation: Samples | None = None,
    variants: Sequence[str] = (),
    backends: Sequence[str] = (),
    thresholds: Mapping[str, float] | None = None,
    version: str = "",
) -> apb.OptimizeModelRequest:
    """An OptimizeModel request. calibration / validation: an .npz file (path or its
    bytes) or arrays by input name (plus `labels` for a classifier); no validation set:
    the gateway splits the calibration set in two; None: calibrate on the live requests
    the model keeps (its config's capture_rows). thresholds: max_accuracy_drop,
    min_top1_agreement, max_abs_error, max_mean_rel_error over the defaults."""
    return apb.OptimizeModelRequest(
        name=name,
        version=version,
        variants=list(variants),
        backends=list(backends),
        use_captured=calibration is None,
        calibration_npz=_npz(calibration) if calibration is not None else b"",
        validation_npz=_npz(validation) if validation is not None else b"",
        thresholds=dict(thresholds or {}),
    )


def stage_printer(stream: TextIO | None = None) -> StageProgress:
    """A StageProgress writing one line per stage change (and per 10%) to stderr."""
    out = sys.stderr if stream is None else stream
    shown: list[tuple[str, int]] = []

    def report(stage: str, fraction: float, message: str) -> None:
        step = (stage, int(fraction * 10))
        if not shown or shown[-1] != step:
            shown.append(step)
            out.write(f"[{fraction:4.0%}] {stage}: {message}\n")
            out.flush()

    return report


def profile(
    name: str,
    version: str = "",
    batch_sizes: Sequence[int] = (),
    concurrency: Sequence[int] = (),
    price_per_hour: Mapping[str, float] | None = None,
    latency_budget_ms: float = 0.0,
    seconds_per_case: float = 0.0,
    *,
    timeout_s: float | None = None,
) -> Call[apb.ProfileModelResponse]:
    """Measure every arm of a serving version in the gateway's process (latency,
    throughput, CPU, cost per 1000 inferences by batch size and concurrency); the
    report (Markdown, JSON) and its PNG plots. No deadline unless `timeout_s`."""
    request = apb.ProfileModelRequest(
        name=name,
        version=version,
        batch_sizes=list(batch_sizes),
        concurrency=list(concurrency),
        price_per_hour=dict(price_per_hour or {}),
        latency_budget_ms=latency_budget_ms,
        seconds_per_case=seconds_per_case,
    )
    return Call(
        "ProfileModel", request, same_response, timeout_s, repeatable=False, default_deadline=False
    )


def _npz(samples: Samples) -> bytes:
    if isinstance(samples, bytes):
        return samples
    if isinstance(samples, Path | str):
        return Path(samples).read_bytes()
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in samples.items()})  # type: ignore[arg-type]
    return buffer.getvalue()
