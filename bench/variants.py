"""The variants section: a model served with its admitted variants vs fp32 alone.

For mlp_large (weight-bound: int8 should win by a large factor on this CPU) and cnn
(compute-bound: dynamic int8 turns its Conv into ConvInteger and runs slower), the
bench builds every variant this machine makes (infergate.optimize) into a copy of
the model, gates them on random inputs against fp32, and serves:
- `<model>_all`: every admitted arm, latency policy (the gateway's default);
- `<model>_fp32`: the fp32 onnxruntime arm alone;
- `<model>__<arm>`: each admitted arm pinned (routing fixed), one twin each.
perf_analyzer drives each at the bench's concurrency, in turn, one gateway, twice
(the second pass in reverse order; a row gives the passes' mean). Target:
the latency policy reaches >= 0.95x the best pinned arm, and never loses to fp32.

mlp_large's random weights give 1000 logits with thin margins, so its int8 variants
agree with fp32 on the top class for 94-97% of random rows: the bench gates it with
`min_top1_agreement` 0.93 and a mean relative error bound of 0.05 instead of 0.99
(docs/variants.md says why and what the default is for).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from bench.config import BenchConfig
from bench.gateway_process import GatewayError, gateway
from bench.perf_analyzer import PerfAnalyzerError, PerfResult, measure_logged
from bench.progress import log
from bench.report import Column, Section, mark, num, ratio
from infergate import optimize
from infergate.backends.base import BackendOptions
from infergate.clients import ClientError
from infergate.clients.admin_client import AdminClient
from infergate.gateway.core.config_spec import spec_from_config
from infergate.gateway.core.repository import parse_config

MODELS = {
    "mlp_large": {"min_top1_agreement": 0.93, "max_mean_rel_error": 0.05},
    "cnn": {},
}
CONCURRENCY = 16
CALIBRATION_ROWS = 64
VALIDATION_ROWS = 256
TARGET = 0.95


def _config_text(source: Path, name: str, routing: str, allowed: list[str]) -> str:
    config = parse_config((source / "config.pbtxt").read_text(), str(source))
    config.name = name
    del config.allowed_backends[:]
    config.allowed_backends.extend(allowed)
    config.ClearField("backend")
    config.ClearField("routing")
    if routing:
        config.routing.policy = "fixed"
        config.routing.fixed_arm = routing
    config.max_batch_size = config.max_batch_size or 32
    if not config.HasField("dynamic_batching"):
        config.dynamic_batching.max_queue_delay_microseconds = 2000
    return text_format.MessageToString(config)


def build(source_repository: Path, model: str, dest: Path) -> list[optimize.VariantOutcome]:
    """A copy of `model`'s newest version with every variant built and gated."""
    source = source_repository / model
    version = dest / model / "1"
    version.mkdir(parents=True)
    for artifact in (source / "1").iterdir():
        if artifact.is_file():
            (version / artifact.name).symlink_to(artifact.resolve())
    shutil.copy(source / "config.pbtxt", dest / model / "config.pbtxt")
    config = parse_config((source / "config.pbtxt").read_text(), model)
    spec = spec_from_config(config)
    data = optimize.prepare(
        spec,
        optimize.random_dataset(spec, CALIBRATION_ROWS, seed=1),
        optimize.random_dataset(spec, VALIDATION_ROWS, seed=2),
    )
    thresholds = optimize.GateThresholds.from_mapping(MODELS[model])
    log(f"variants: building {model}'s variants")
    return optimize.build_variants(
        version, spec, data, options=BackendOptions(use_gpu=False), thresholds=thresholds
    )


def variants_section(config: BenchConfig, workdir: Path) -> Section:
    section = Section(
        key="variants",
        title="Variants: admitted variants under the latency policy vs each arm pinned vs fp32",
        description=(
            "Every variant this machine makes, built and gated (random inputs against fp32), "
            "served by one gateway (default flags) under three configs per model; "
            f"perf_analyzer, batch-1 requests at concurrency {CONCURRENCY}, in turn, in two "
            "passes (the second in reverse order); throughput and p99 are the passes' means."
        ),
        columns=[
            Column("model", "model"),
            Column("served", "served"),
            Column("throughput (infer/s)", "throughput", num(1)),
            Column("each pass (infer/s)", "passes"),
            Column("p99 (us)", "p99_us", num(0)),
            Column("vs best pinned", "vs_best", lambda v: f"{v:.2f}x"),
            Column("vs fp32", "vs_fp32", lambda v: f"{v:.2f}x"),
            Column("target", "target"),
        ],
    )
    built = workdir / "variants-built"
    serving = workdir / "variants-repository"
    serving.mkdir(parents=True)
    for model in MODELS:
        try:
            outcomes = build(config.repository, model, built)
        except Exception as exc:  # a model missing (make models), a library missing
            section.notes.append(f"{model}: variants not built: {exc}")
            continue
        for o in outcomes:
            figures = o.figures.to_dict() if o.figures else {}
            section.remarks.append(
                f"{model} {o.name}: {o.status}"
                + (f" (top-1 agreement {figures.get('top1_agreement')})" if figures else "")
                + (f"; {o.reason}" if o.status != optimize.ADMITTED else "")
            )
        arms = ["onnxruntime/cpu/fp32"] + [
            f"{o.backend}/cpu/{o.variant}" for o in outcomes if o.status == optimize.ADMITTED
        ]
        source_version = built / model / "1"
        variants: dict[str, Any] = {
            f"{model}_all": ("", []),
            f"{model}_fp32": ("onnxruntime/cpu/fp32", ["onnxruntime"]),
            **{f"{model}__{arm.replace('/', '_')}": (arm, []) for arm in arms},
        }
        for name, (fixed, allowed) in variants.items():
            (serving / name).mkdir()
            (serving / name / "1").symlink_to(source_version.resolve(), target_is_directory=True)
            (serving / name / "config.pbtxt").write_text(
                _config_text(built / model, name, fixed, allowed)
            )
    try:
        # --insecure-admin (loopback only): DescribeModel tells where the batches went.
        with gateway(
            serving, workdir / "variants-gateway.log", serve_args=["--insecure-admin"]
        ) as gw:
            # Two passes, the second in reverse order, so that no config always runs
            # first (after the gateway starts, or after another model's configs).
            names = sorted(p.name for p in serving.iterdir())
            passes: dict[str, list[PerfResult]] = {name: [] for name in names}
            for pass_number, order in enumerate((names, names[::-1]), start=1):
                for name in order:
                    try:
                        passes[name].append(
                            measure_logged(
                                f"{name} (pass {pass_number})",
                                gw.url,
                                name,
                                workdir / f"variants-{name}-{pass_number}.csv",
                                concurrency=CONCURRENCY,
                                **config.perf_settings(),
                            )
                        )
                    except PerfAnalyzerError as exc:
                        section.notes.append(f"{name}, pass {pass_number}: {exc}")
            with AdminClient(gw.url, timeout_s=30) as admin:
                section.remarks.extend(_arm_shares(admin, name) for name in names)
    except GatewayError as exc:
        section.notes.append(f"gateway failed: {exc}")
        return section
    results = {name: _Passes.of(runs) for name, runs in passes.items() if runs}
    for model in MODELS:
        pinned = {n: r for n, r in results.items() if n.startswith(f"{model}__") and r is not None}
        everything, fp32 = results.get(f"{model}_all"), results.get(f"{model}_fp32")
        best = max(pinned.values(), key=lambda r: r.throughput, default=None)
        for label, result in [("all admitted, latency policy", everything), ("fp32 only", fp32)] + [
            (f"pinned {n.split('__', 1)[1]}", r) for n, r in sorted(pinned.items())
        ]:
            if result is None:
                continue
            row = {
                "model": model,
                "served": label,
                "throughput": result.throughput,
                "passes": " / ".join(f"{t:,.0f}" for t in result.passes),
                "p99_us": result.p99_us,
                "vs_best": ratio(result.throughput, best.throughput if best else None),
                "vs_fp32": ratio(result.throughput, fp32.throughput if fp32 else None),
            }
            if result is everything:
                row["target"] = f">= {TARGET}x best pinned: " + mark(
                    row["vs_best"], at_least=TARGET
                )
            section.rows.append(row)
    return section


@dataclass(frozen=True)
class _Passes:
    """A config's passes taken together: mean throughput and p99, each pass's throughput."""

    throughput: float
    p99_us: float
    passes: tuple[float, ...]

    @classmethod
    def of(cls, runs: list[PerfResult]) -> _Passes:
        return cls(
            throughput=sum(r.throughput for r in runs) / len(runs),
            p99_us=sum(r.p99_us for r in runs) / len(runs),
            passes=tuple(r.throughput for r in runs),
        )


def _arm_shares(admin: AdminClient, name: str) -> str:
    """Where the batches of `name` went (warm-up included; arms under 1% left out), and
    what each arm's batches cost: why a policy lands below the best pinned arm."""
    try:
        described = admin.describe(name)
    except ClientError as exc:
        return f"{name}: batches by arm unknown ({exc})"
    version = next(v for v in described.versions if v.version == described.serving_version)
    arms = sorted(version.arms, key=lambda a: a.share, reverse=True)
    shown = "; ".join(
        f"{a.name} {a.share:.0%} ({a.latency.mean_rows_per_batch:.1f} rows, "
        f"{a.latency.mean_batch_ms:.1f} ms a batch)"
        for a in arms
        if a.share >= 0.01
    )
    policy = version.routing.settings
    switches = (
        f"; the policy changed arms {policy['switches']} times in {policy['batches']} batches "
        f"and probed {policy['explored']} times"
        if "switches" in policy
        else ""
    )
    return f"{name}, batches by arm: {shown}{switches}"


if __name__ == "__main__":
    import argparse
    import tempfile

    from bench.config import parse_config as parse_bench_config

    parsed, _ = parse_bench_config(
        argparse.ArgumentParser(description=__doc__), None, ("variants",)
    )
    with tempfile.TemporaryDirectory() as tmp:
        print(variants_section(parsed, Path(tmp)).markdown())
