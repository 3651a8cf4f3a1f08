"""Conversion between the model-control messages and the core's admin types.

The admin RPC (admin.proto) and Triton's RepositoryModelLoad parameters both
become core Registrations and ModelViews here, so the servicers stay thin.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf import json_format

from infergate.gateway.core import store
from infergate.gateway.core.cache import CacheStats
from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.model_control import ModelView, Registered, Registration
from infergate.gateway.core.optimization import (
    Optimized,
    OptimizeRequest,
    ProfileRequest,
)
from infergate.gateway.core.replica_state import ReplicaModel
from infergate.gateway.core.repository import version_key
from infergate.gateway.core.stats import Duration, ModelStats
from infergate.gateway.core.upload import ArtifactSpec, check_filename
from infergate.optimize import StoredVariant, VariantOutcome
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import InvalidInput, shown, shown_list

log = logging.getLogger(__name__)

# Triton's load parameters (PROTOCOL.md, "Repository").
CONFIG_PARAMETER = "config"
FILE_PREFIX = "file:"

# ---- registration ------------------------------------------------------------------


def registration(header: apb.RegisterModelHeader) -> Registration:
    return Registration(
        name=header.name,
        config=header.config if header.HasField("config") else None,
        version=header.version,
        artifacts=tuple(
            ArtifactSpec(a.filename, a.sha256.lower(), a.size) for a in header.artifacts
        ),
    )


def registered(result: Registered) -> apb.RegisterModelResponse:
    model = result.model
    return apb.RegisterModelResponse(
        name=model.name,
        version=model.version,
        backend=model.backend,
        device=model.runtime.device,
        load_ms=result.load_s * 1e3,
        replaced_versions=list(result.replaced),
    )


# ---- Triton's RepositoryModelLoad --------------------------------------------------


@dataclass(frozen=True)
class TritonLoad:
    """What a RepositoryModelLoad asks for: a reload (no files) or a new version."""

    config: mc.ModelConfig | None
    version: str
    files: dict[str, bytes]

    def registration(self, name: str) -> Registration:
        artifacts = tuple(
            ArtifactSpec(filename, hashlib.sha256(data).hexdigest(), len(data))
            for filename, data in self.files.items()
        )
        return Registration(name, self.config, self.version, artifacts)


def triton_load(parameters: Mapping[str, pb.ModelRepositoryParameter]) -> TritonLoad:
    config: mc.ModelConfig | None = None
    versions: set[str] = set()
    files: dict[str, bytes] = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        if key == CONFIG_PARAMETER:
            if kind != "string_param":
                raise InvalidInput("load parameter 'config' must be a string (ModelConfig JSON)")
            config = _config_from_json(value.string_param)
        elif key.startswith(FILE_PREFIX):
            if kind != "bytes_param":
                raise InvalidInput(f"load parameter {shown(key)} must carry the file's bytes")
            version, filename = _file_path(key)
            store.check_version(version)
            check_filename(filename)
            versions.add(version)
            files[filename] = value.bytes_param
        else:
            raise InvalidInput(
                f"unknown load parameter {shown(key)}; expected '{CONFIG_PARAMETER}' and "
                f"'{FILE_PREFIX}<version>/<filename>'"
            )
    if files and config is None:
        raise InvalidInput("a load with files needs the model's config in the 'config' parameter")
    if len(versions) > 1:
        raise InvalidInput(
            f"a load may carry one version's files, got versions {shown_list(sorted(versions))}"
        )
    return TritonLoad(config, versions.pop() if versions else "", files)


def _file_path(key: str) -> tuple[str, str]:
    parts = key[len(FILE_PREFIX) :].split("/")
    if len(parts) != 2:
        raise InvalidInput(
            f"load parameter {shown(key)}: expected '{FILE_PREFIX}<version>/<filename>' "
            "(a file directly in a version folder)"
        )
    return parts[0], parts[1]


def _config_from_json(text: str) -> mc.ModelConfig:
    config = mc.ModelConfig()
    try:
        json_format.Parse(text, config)
        return config
    except json_format.ParseError as strict_error:
        config = mc.ModelConfig()
        try:
            # A Triton config may carry fields infergate does not have: skip them, as
            # the repository reader does for config.pbtxt.
            json_format.Parse(text, config, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise InvalidInput(f"load parameter 'config' is not a ModelConfig: {exc}") from exc
        log.warning("load config: ignoring what infergate does not support: %s", strict_error)
        return config


# ---- replicas (--wait-replicas, per-replica state) ----------------------------------

# The longest an admin call may wait for the other replicas.
MAX_WAIT_REPLICAS_S = 3600.0


def wait_replicas_s(value: float) -> float:
    """A request's wait_replicas_s, checked: 0 (no wait) up to MAX_WAIT_REPLICAS_S."""
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT_REPLICAS_S:
        raise InvalidInput(
            f"wait_replicas_s must lie between 0 (do not wait) and {MAX_WAIT_REPLICAS_S:g}, "
            f"not {value}"
        )
    return value


def replica_models(rows: Iterable[ReplicaModel]) -> list[apb.ReplicaModel]:
    return [
        apb.ReplicaModel(
            replica=row.replica,
            state=row.state,
            reason=row.reason,
            versions=list(row.versions),
            in_step=row.in_step,
            position=row.position,
        )
        for row in rows
    ]


# ---- listing and description ---------------------------------------------------------


def summary(view: ModelView) -> apb.ModelSummary:
    message = apb.ModelSummary(
        name=view.name, state=view.state, reason=view.reason, versions=list(view.on_disk)
    )
    if view.serving:
        newest = view.serving[-1]
        message.serving_version = newest.version
        message.backend = newest.backend
        message.device = newest.runtime.device
    return message


def description(
    view: ModelView,
    artifacts: Mapping[str, list[ArtifactSpec]],
    cache: CacheStats,
    variants: Mapping[str, list[StoredVariant]] | None = None,
) -> apb.DescribeModelResponse:
    response = apb.DescribeModelResponse(name=view.name, state=view.state, reason=view.reason)
    serving = {m.version: m for m in view.serving}
    if view.serving:
        response.serving_version = view.serving[-1].version
        response.config.CopyFrom(view.serving[-1].config)
    elif view.disk_config is not None:
        response.config.CopyFrom(view.disk_config)
    for version in sorted(set(view.on_disk) | set(serving), key=version_key):
        described = response.versions.add(version=version)
        for artifact in artifacts.get(version, ()):
            described.artifacts.add(
                filename=artifact.filename, sha256=artifact.sha256, size=artifact.size
            )
        for stored in (variants or {}).get(version, ()):
            described.variants.append(stored_result(stored))
        model = serving.get(version)
        if model is not None:
            described.state = "READY"
            _describe_serving(described, model)
        else:
            described.state = "UNAVAILABLE"
            described.reason = (
                f"not served: version {response.serving_version} serves (the newest one)"
                if view.serving
                else view.reason
            )
    response.shared_cache.CopyFrom(
        apb.SharedCache(
            entries=cache.entries,
            bytes=cache.used_bytes,
            max_bytes=cache.max_bytes,
            hits=cache.hits,
            misses=cache.misses,
            evictions=cache.evictions,
            hit_ratio=_ratio(cache.hits, cache.hits + cache.misses),
        )
    )
    return response


def _describe_serving(described: apb.VersionDescription, model: ModelVersion) -> None:
    stats = model.stats
    router = model.router
    for arm in router.describe():
        described.arms.add(
            name=arm.arm,
            backend=arm.backend,
            device=arm.device,
            variant=arm.variant,
            latency=apb.LatencyFigures(
                batches=arm.batches,
                mean_batch_ms=arm.mean_batch_ms,
                mean_rows_per_batch=arm.mean_rows_per_batch,
                fixed_ms=arm.fixed_ms,
                per_row_ms=arm.per_row_ms,
                p50_ms=arm.p50_ms,
                p95_ms=arm.p95_ms,
            ),
            share=arm.share,
            failures=arm.failures,
            circuit=arm.circuit,
            last_error=arm.last_error,
        )
    policy = router.policy.describe()
    described.routing.CopyFrom(
        apb.RoutingState(
            policy=str(policy.pop("policy")),
            settings={k: str(v) for k, v in policy.items()},
            unavailable_backends=model.arm_errors,
        )
    )
    queue = model.queue
    described.queue.CopyFrom(apb.QueueState(depth=queue.depth, inflight_batches=queue.inflight))
    if model.execution is not None:
        choice = model.execution
        described.execution.CopyFrom(
            apb.ExecutionChoice(
                intra_op_threads=choice.intra_op_threads,
                intra_op_threads_reason=choice.intra_op_threads_reason,
                max_inflight_batches=choice.max_inflight_batches,
                max_inflight_batches_reason=choice.max_inflight_batches_reason,
                inline_below_us=router.inline_below_s * 1e6,
                inline_batches=router.inline_batches,
            )
        )
    config = model.config
    hits, misses = stats.cache_hit.count, stats.cache_miss.count
    described.cache.CopyFrom(
        apb.CacheState(
            enabled=config.response_cache.enable,
            ttl_ms=config.response_cache_ttl_ms,
            hits=hits,
            misses=misses,
            hit_ratio=_ratio(hits, hits + misses),
        )
    )
    described.statistics.CopyFrom(_statistics(stats))


def _statistics(stats: ModelStats) -> apb.VersionStatistics:
    compute_ns = stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns
    return apb.VersionStatistics(
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        success=stats.success.count,
        fail=stats.fail.count,
        last_inference_ms=stats.last_inference_ms,
        mean_queue_ms=_mean_ms(stats.queue),
        mean_compute_ms=_mean_ms(Duration(stats.compute_infer.count, compute_ns)),
        batch_sizes={size: b.compute_infer.count for size, b in stats.batches.items()},
    )


def _mean_ms(duration: Duration) -> float:
    return duration.ns / duration.count / 1e6 if duration.count else 0.0


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


# ---- variants and profiles ---------------------------------------------------------

_FIGURES = (
    "max_abs_error",
    "mean_rel_error",
    "top1_agreement",
    "accuracy",
    "reference_accuracy",
    "accuracy_drop",
)


def optimize_request(message: apb.OptimizeModelRequest) -> OptimizeRequest:
    return OptimizeRequest(
        name=message.name,
        version=message.version,
        variants=tuple(message.variants),
        backends=tuple(message.backends),
        calibration_npz=message.calibration_npz,
        validation_npz=message.validation_npz,
        thresholds=dict(message.thresholds),
        use_captured=message.use_captured,
    )


def outcome_result(outcome: VariantOutcome) -> apb.VariantResult:
    figures = outcome.figures.to_dict() if outcome.figures is not None else {}
    return apb.VariantResult(
        backend=outcome.backend,
        variant=outcome.variant,
        status=outcome.status,
        reason=outcome.reason,
        figures=_numbers(figures),
    )


def stored_result(variant: StoredVariant) -> apb.VariantResult:
    verdict = variant.record.get("verdict") or {}
    reasons = [r for r in verdict.get("reasons", ()) if isinstance(r, str)]
    return apb.VariantResult(
        backend=variant.backend,
        variant=variant.variant,
        status="admitted" if variant.admitted else "rejected",
        reason="; ".join(reasons),
        figures=_numbers(variant.figures),
        stale=variant.stale,
    )


def optimized(result: Optimized) -> apb.OptimizeModelProgress:
    return apb.OptimizeModelProgress(
        stage="done",
        fraction=1.0,
        message=f"{sum(o.status == 'admitted' for o in result.outcomes)} variant(s) admitted",
        done=True,
        results=[outcome_result(o) for o in result.outcomes],
        arms=result.arms,
    )


def profile_request(message: apb.ProfileModelRequest) -> ProfileRequest:
    return ProfileRequest(
        name=message.name,
        version=message.version,
        batch_sizes=tuple(int(b) for b in message.batch_sizes),
        concurrency=tuple(int(c) for c in message.concurrency),
        prices_per_hour=dict(message.price_per_hour),
        latency_budget_ms=message.latency_budget_ms,
        seconds_per_case=message.seconds_per_case,
    )


def profile_report(files: Mapping[str, bytes]) -> apb.ProfileModelResponse:
    """The report files (profile.md, profile.json, PNG plots) as one message."""
    response = apb.ProfileModelResponse()
    for name, data in files.items():
        if name.endswith(".md"):
            response.report_markdown = data.decode()
        elif name.endswith(".json"):
            response.report_json = data.decode()
        elif name.endswith(".png"):
            response.plots[name] = data
    return response


def _numbers(figures: Mapping[str, object]) -> dict[str, float]:
    return {
        k: float(v)
        for k in _FIGURES
        if isinstance(v := figures.get(k), int | float) and not isinstance(v, bool)
    }
