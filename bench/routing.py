"""Routing benchmark (issue 6), run in process: the core driven without gRPC, so the
figures show the routing policy and not the client.

Two parts, in one run, on a model served by every installed backend (arms):
- steady load: the latency policy against each arm fixed, same load for each;
  target: within 5% of the best fixed arm's throughput;
- one arm slowed part way through: the arm the latency policy likes best is made
  5x slower (a sleep added to each of its calls, as a device that got slower would
  be) a quarter of the way through the run; the latency policy against staying
  fixed on that arm; target: >= 1.5x the static choice's throughput over the run.
  What is reachable depends on how good the second-best arm is, so the report also
  gives the ceiling of an oracle that switches at once (from the steady figures).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import BenchConfig
from bench.progress import log
from bench.report import Column, Section, num
from infergate.backends.base import BackendOptions, LoadedModel, WrappedModel
from infergate.backends.discovery import discover
from infergate.gateway.core.cache import ResponseCache
from infergate.gateway.core.lifecycle import ModelLifecycle
from infergate.gateway.core.lru_store import LRUStore
from infergate.gateway.core.pipeline import InferenceCore
from infergate.gateway.core.request import InferRequest, InputTensor

MODEL = "cnn"
CONCURRENCY = 16
STEADY_S = 5.0
SLOWDOWN_RUN_S = 8.0
SLOWDOWN_FACTOR = 5.0
SLOWDOWN_AT = 0.25  # of the run
CACHE_MAX_BYTES = 1024 * 1024

COLUMNS = [
    Column("run", "run"),
    Column("policy", "policy"),
    Column("throughput (rows/s)", "throughput", num(1)),
    Column("p50 (ms)", "p50_ms", num(2)),
    Column("p99 (ms)", "p99_ms", num(2)),
    Column("batches per arm", "shares"),
    Column("each pass (rows/s)", "passes"),
    Column("vs reference", "ratio", lambda v: f"{float(v):.2f}x"),
]


class Slowable(WrappedModel):
    """Wraps a runtime; once `slow_from` passes, each call takes `factor` times longer."""

    def __init__(self, inner: LoadedModel, factor: float) -> None:
        super().__init__(inner)
        self.factor = factor
        self.slow_from = float("inf")

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        outputs = self.inner.infer(inputs)
        if time.monotonic() >= self.slow_from:
            # Sleeping releases the GIL and the cores: the arm is slower, not the machine.
            time.sleep((time.perf_counter() - started) * (self.factor - 1))
        return outputs


def _repository(source: Path, dest: Path, policies: Mapping[str, str]) -> None:
    """Twins of MODEL, one per routing policy, each with every artifact linked."""
    version = max(
        (p for p in (source / MODEL).iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    for twin, routing in policies.items():
        folder = dest / twin / "1"
        folder.mkdir(parents=True)
        for artifact in version.iterdir():
            (folder / artifact.name).symlink_to(artifact.resolve())
        (dest / twin / "config.pbtxt").write_text(
            "max_batch_size: 32\n"
            "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
            f"routing {{ {routing} }}\n"
        )


async def _drive(core: InferenceCore, model: str, seconds: float) -> dict[str, Any]:
    """CONCURRENCY callers sending 1-row requests back to back for `seconds`: the
    latencies, the seconds it took, and the batches each arm ran."""
    spec = core.model(model).spec.inputs[0]
    rng = np.random.default_rng(0)
    shape = (1, *spec.shape[1:])
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def caller() -> None:
        x = rng.standard_normal(shape).astype(np.float32)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await core.infer(
                InferRequest(model, "", "", [InputTensor(spec.name, "FP32", shape, x)])
            )
            latencies.append(time.perf_counter() - started)

    before = {a.arm: a.batches for a in core.model(model).router.describe()}
    started = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - started
    batches = {a.arm: a.batches - before[a.arm] for a in core.model(model).router.describe()}
    return {"latencies": latencies, "elapsed": elapsed, "batches": batches}


def _summary(*runs: dict[str, Any]) -> dict[str, Any]:
    """One row from one or more runs of the same twin."""
    latencies = [x for run in runs for x in run["latencies"]]
    batches: dict[str, int] = {}
    for run in runs:
        for arm, n in run["batches"].items():
            batches[arm] = batches.get(arm, 0) + n
    return {
        "throughput": len(latencies) / sum(run["elapsed"] for run in runs),
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "shares": ", ".join(f"{arm} {n}" for arm, n in batches.items() if n),
        "passes": " / ".join(f"{len(run['latencies']) / run['elapsed']:,.0f}" for run in runs),
    }


async def _run(config: BenchConfig, workdir: Path, section: Section) -> None:
    backends = discover().backends
    # No model here enables the response cache: its size does not matter.
    cache = ResponseCache(LRUStore(CACHE_MAX_BYTES))
    lifecycle = ModelLifecycle(backends, BackendOptions(), cache, worker_threads=4)
    core = InferenceCore(lifecycle.registry, cache)
    try:
        # Arms are what the model loads on; find them from a probe twin.
        probe_repo = workdir / "routing-probe"
        _repository(config.repository, probe_repo, {"probe": 'policy: "latency"'})
        await lifecycle.load_repository(probe_repo)
        arms = [a.backend for a in core.model("probe").arms]
        log(f"  routing: {MODEL} arms {arms}")
        if len(arms) < 2:
            section.notes.append(f"**only {len(arms)} arm(s) for {MODEL}: nothing to route**")
            return
        policies = {"latency": 'policy: "latency"'}
        policies.update({f"fixed_{b}": f'policy: "fixed" fixed_arm: "{b}"' for b in arms})
        repo = workdir / "routing"
        _repository(config.repository, repo, policies)
        await lifecycle.load_repository(repo)

        # Two passes, the second in reverse order: whichever twin runs first after the
        # load pays the process's warm-up (it cost the latency policy, always first,
        # 11-13% against the same arm fixed, with 99% of its batches on that arm).
        passes: dict[str, list[dict[str, Any]]] = {twin: [] for twin in policies}
        for order in (list(policies), list(reversed(policies))):
            for twin in order:
                log(f"  routing steady: {twin} ...")
                passes[twin].append(await _drive(core, twin, STEADY_S))
        steady = {twin: _summary(*runs) for twin, runs in passes.items()}
        best_fixed = max(
            (t for t in policies if t != "latency"), key=lambda t: steady[t]["throughput"]
        )
        for twin, row in steady.items():
            row.update(
                run="steady",
                policy=twin,
                ratio=row["throughput"] / steady[best_fixed]["throughput"],
            )
            section.rows.append(row)
        latency_rps = steady["latency"]["throughput"]
        best_rps = steady[best_fixed]["throughput"]
        section.remarks.append(
            f"Steady: latency policy {latency_rps:,.0f} rows/s vs best fixed arm "
            f"({best_fixed}) {best_rps:,.0f}: {latency_rps / best_rps:.3f}x "
            f"(target >= 0.95x: {'met' if latency_rps >= 0.95 * best_rps else 'MISSED'})."
        )

        # The arm the latency policy preferred is the one that slows down.
        preferred = max(core.model("latency").router.describe(), key=lambda a: a.batches).backend
        slowed: dict[str, dict[str, Any]] = {}
        for twin in ("latency", f"fixed_{preferred}"):
            model = core.model(twin)
            arm = next(a for a in model.arms if a.backend == preferred)
            wrapper = Slowable(arm.runtime, SLOWDOWN_FACTOR)
            arm.runtime = wrapper
            wrapper.slow_from = time.monotonic() + SLOWDOWN_RUN_S * SLOWDOWN_AT
            log(f"  routing slowdown: {twin} ({preferred} slows {SLOWDOWN_FACTOR:g}x) ...")
            slowed[twin] = _summary(await _drive(core, twin, SLOWDOWN_RUN_S))
            arm.runtime = wrapper.inner
        reference = slowed[f"fixed_{preferred}"]["throughput"]
        for twin, row in slowed.items():
            row.update(
                run=f"{preferred} slowed {SLOWDOWN_FACTOR:g}x at {SLOWDOWN_AT:.0%} of the run",
                policy=twin,
                ratio=row["throughput"] / reference,
            )
            section.rows.append(row)
        gain = slowed["latency"]["throughput"] / reference
        # What switching at once to the best other arm would give, by the steady figures.
        fixed_rps = {
            t.removeprefix("fixed_"): steady[t]["throughput"] for t in steady if t != "latency"
        }
        best_rps = fixed_rps[preferred]
        second = max(v for k, v in fixed_rps.items() if k != preferred)
        static = SLOWDOWN_AT * best_rps + (1 - SLOWDOWN_AT) * best_rps / SLOWDOWN_FACTOR
        oracle = SLOWDOWN_AT * best_rps + (1 - SLOWDOWN_AT) * max(
            second, best_rps / SLOWDOWN_FACTOR
        )
        section.remarks.append(
            f"Slowdown: latency policy {gain:.2f}x the static choice of {preferred} over the run "
            f"(target >= 1.5x: {'met' if gain >= 1.5 else 'MISSED'}); an oracle switching at once "
            f"to the next-best arm ({second / best_rps:.2f}x as fast when steady) would reach "
            f"about {oracle / static:.2f}x."
        )
    finally:
        await lifecycle.aclose()


def routing_section(config: BenchConfig, workdir: Path) -> Section:
    section = Section(
        key="routing",
        title="Routing: latency policy vs fixed arms",
        description=(
            f"In process (no gRPC): {CONCURRENCY} callers sending 1-row requests to `{MODEL}` "
            f"served on every installed backend; {STEADY_S:g} s per steady run, twice (all "
            "twins in turn, then in reverse order; a row sums both), "
            f"{SLOWDOWN_RUN_S:g} s for the slowdown runs. Throughput in rows/s; latency per "
            "request in ms; 'vs reference' is against the best fixed arm (steady) or the "
            "static choice of the slowed arm (slowdown)."
        ),
        columns=COLUMNS,
    )
    if not (config.repository / MODEL).is_dir():
        section.notes.append(f"**no model {MODEL} in {config.repository}**")
        return section
    try:
        asyncio.run(_run(config, workdir, section))
    except Exception as exc:  # a failure is reported in the table, not a crash
        section.notes.append(f"**routing benchmark failed:** {type(exc).__name__}: {exc}")
        log(f"routing benchmark failed: {exc}")
    return section
