"""Section "batching": dynamic batching on vs off, and vs onnxruntime in process.

For each model (mlp_large, weight-heavy; cnn, compute-bound) a temporary repository
holds two twins of the same model.onnx (symlinked): `<model>_on` with
`max_batch_size: 32` and `dynamic_batching { max_queue_delay_microseconds: N }`, and
`<model>_off` with the same max_batch_size and no dynamic_batching block. One gateway
serves all four; perf_analyzer sends batch-1 requests to each at every concurrency.

Before the gateway starts, the same model.onnx is run by onnxruntime inside this
process at batch 32 (default session options, ORT_ENABLE_ALL, ~3 s of calls after a
warm-up): that is the ceiling a gateway can approach, and "on / in-process" says how
close it gets.

Targets (issue 4; docs/benchmark-results.md): mlp_large on/off >= 5x; mlp_large on vs
in-process >= 0.6x; cnn on/off must not lose throughput (>= 1.0x).

    python -m bench.batching --repository models/repository --sweep

re-runs the choice of queue delay and serve flags (one markdown table on stdout, rows
per flag variant and delay; the sweep takes about 5-10 minutes).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import BenchConfig, parse_config
from bench.gateway_process import Gateway, GatewayError, gateway
from bench.model_counts import cpu_us_per_request, usage
from bench.perf_analyzer import PerfAnalyzerError, PerfResult, measure_logged
from bench.progress import log
from bench.report import Column, Section, first_line, mark, num, ratio, times
from bench.serve_settings import (
    DELAY_WHY,
    FLAGS_WHY,
    MAX_BATCH_SIZE,
    QUEUE_DELAY_US,
    SERVE_ARGS,
)
from bench.twin_repository import RepositoryError, Twin, make_repository, source_version_dir

MODELS = ("mlp_large", "cnn")
CONCURRENCY = (16, 32)
IN_PROCESS_BATCH = 32
IN_PROCESS_SECONDS = 3.0

# Issue 4's targets.
TARGET_ON_OFF = {"mlp_large": 5.0, "cnn": 1.0}
TARGET_VS_IN_PROCESS = {"mlp_large": 0.6}

COLUMNS = [
    Column("model", "model"),
    Column("concurrency", "concurrency"),
    Column("off (infer/s)", "off_throughput", num(1)),
    Column("off p50 (us)", "off_p50_us", num(0)),
    Column("off p99 (us)", "off_p99_us", num(0)),
    Column("on (infer/s)", "on_throughput", num(1)),
    Column("on p50 (us)", "on_p50_us", num(0)),
    Column("on p99 (us)", "on_p99_us", num(0)),
    Column("rows/batch (on)", "on_rows_per_batch", num(1)),
    Column("on/off", "on_off", times()),
    Column("target on/off", "on_off_target"),
    Column("in-process b32 (rows/s)", "in_process_rows_per_s", num(1)),
    Column("on/in-process", "on_vs_in_process", times()),
    Column("target on/in-process", "vs_in_process_target"),
    Column("note", "note"),
]


# ---- onnxruntime in process ------------------------------------------------------------


@dataclass(frozen=True)
class InProcess:
    rows_per_s: float
    p50_ms: float
    calls: int
    threads: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_per_s": self.rows_per_s,
            "p50_ms": self.p50_ms,
            "calls": self.calls,
            "threads": self.threads,
        }


def in_process(
    model_path: Path, batch: int = IN_PROCESS_BATCH, seconds: float = IN_PROCESS_SECONDS
) -> InProcess:
    """onnxruntime on this process's thread, default session options + ORT_ENABLE_ALL."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    feed = {}
    for node in session.get_inputs():
        shape = [batch, *(d if isinstance(d, int) and d > 0 else 1 for d in node.shape[1:])]
        feed[node.name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    outputs = [o.name for o in session.get_outputs()]
    warm_until = time.perf_counter() + min(1.0, seconds / 3)
    while time.perf_counter() < warm_until:
        session.run(outputs, feed)
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    while (now := time.perf_counter()) < deadline:
        session.run(outputs, feed)
        latencies.append(time.perf_counter() - now)
    elapsed = time.perf_counter() - started
    threads = options.intra_op_num_threads or 0
    del session
    return InProcess(
        rows_per_s=batch * len(latencies) / elapsed,
        p50_ms=float(np.percentile(latencies, 50)) * 1000,
        calls=len(latencies),
        threads="default" if threads == 0 else str(threads),
    )


# ---- the section ----------------------------------------------------------------------


def twins(models: Sequence[str], delays_us: Sequence[int]) -> dict[str, Twin]:
    """`<model>_off` and, per delay, `<model>_on` (first delay) or `<model>_on<delay>`."""
    out: dict[str, Twin] = {}
    for model in models:
        out[f"{model}_off"] = Twin(model, max_batch_size=MAX_BATCH_SIZE)
        for i, delay in enumerate(delays_us):
            name = f"{model}_on" if i == 0 else f"{model}_on{delay}"
            out[name] = Twin(model, max_batch_size=MAX_BATCH_SIZE, queue_delay_us=delay)
    return out


def batching_section(config: BenchConfig, workdir: Path) -> Section:
    serve_args = (*SERVE_ARGS, *config.serve_args)
    section = Section(
        key="batching",
        title="Dynamic batching: on vs off, and vs onnxruntime in process",
        description=(
            f"One gateway (`{shlex.join(serve_args) or 'default flags'}`) serving two twins "
            f"of each model: batching on (`max_batch_size: {MAX_BATCH_SIZE}`, "
            f"`dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}`) and "
            "off (same max_batch_size, no dynamic_batching), both pinned to onnxruntime "
            "(one arm), so the in-process comparison is like for like. perf_analyzer over gRPC, "
            "batch-1 synchronous requests at a fixed concurrency; latency client-side. "
            "rows/batch is the gateway's own figure (ModelStatistics, inference_count / "
            f"execution_count over the run). In-process: onnxruntime at batch "
            f"{IN_PROCESS_BATCH} in the bench process, default session options + "
            f"ORT_ENABLE_ALL, {IN_PROCESS_SECONDS:g} s of calls after a warm-up, measured "
            "while no gateway runs."
        ),
        columns=COLUMNS,
    )
    section.rows.extend(
        measure_variant(config, workdir, serve_args, [QUEUE_DELAY_US], MODELS, CONCURRENCY)
    )
    section.remarks.append(
        "Targets (issue 4): mlp_large on/off >= 5x; mlp_large on vs in-process >= 0.6x "
        "(about 0.7 is the ceiling on 2 cores: every gRPC request costs CPU of its own); "
        "cnn on/off >= 1.0x (batching a compute-bound net gains little on a CPU, but must "
        "not lose)."
    )
    section.remarks.append(DELAY_WHY)
    section.remarks.append(FLAGS_WHY)
    return section


def measure_variant(
    config: BenchConfig,
    workdir: Path,
    serve_args: Sequence[str],
    delays_us: Sequence[int],
    models: Sequence[str],
    concurrency: Sequence[int],
    *,
    with_in_process: bool = True,
) -> list[dict[str, Any]]:
    """Rows for every model x concurrency (x delay beyond the first, as extra rows)."""
    rows: list[dict[str, Any]] = []
    available: list[str] = []
    for model in models:
        try:
            source_version_dir(config.repository, model)
        except RepositoryError as exc:
            log(f"  {model}: {exc}")
            rows.extend(_error_row(model, c, str(exc)) for c in concurrency)
            continue
        available.append(model)
    if not available:
        return rows

    reference: dict[str, InProcess | str] = {}
    if with_in_process:
        for model in available:
            path = source_version_dir(config.repository, model) / "model.onnx"
            log(f"  {model}: onnxruntime in process at batch {IN_PROCESS_BATCH} ...")
            try:
                reference[model] = result = in_process(path)
            except Exception as exc:  # any runtime failure becomes a cell, not a crash
                log(f"  {model}: in-process run failed: {exc}")
                reference[model] = f"in-process failed: {first_line(exc)}"
                continue
            log(
                f"  {model}: {result.rows_per_s:,.1f} rows/s in process, p50 {result.p50_ms:.2f} ms"
            )

    repository = workdir / "batching-repository"
    try:
        make_repository(repository, twins(available, delays_us), config.repository)
    except (RepositoryError, OSError) as exc:
        rows.extend(_error_row(m, c, f"repository: {exc}") for m in available for c in concurrency)
        return rows
    try:
        with gateway(repository, workdir / "batching-gateway.log", serve_args=serve_args) as gw:
            for model in available:
                for delay_index, delay in enumerate(delays_us):
                    for c in concurrency:
                        rows.append(
                            _row(config, workdir, gw, model, c, delay, delay_index, reference)
                        )
                        gw.check_alive()
    except GatewayError as exc:
        log(f"gateway failed: {exc}")
        done = {(r["model"], r["concurrency"]) for r in rows}
        rows.extend(
            _error_row(m, c, f"gateway failed: {exc}")
            for m in available
            for c in concurrency
            if (m, c) not in done
        )
    return rows


def _row(
    config: BenchConfig,
    workdir: Path,
    gw: Gateway,
    model: str,
    concurrency: int,
    delay_us: int,
    delay_index: int,
    reference: dict[str, InProcess | str],
) -> dict[str, Any]:
    on_name = f"{model}_on" if delay_index == 0 else f"{model}_on{delay_us}"
    row: dict[str, Any] = {"model": model, "concurrency": concurrency, "delay_us": delay_us}
    if delay_index > 0:
        row["model"] = f"{model} (delay {delay_us} us)"
    notes: list[str] = []
    off: PerfResult | None = None
    if delay_index == 0:
        off = _perf(config, workdir, gw, f"{model}_off", concurrency, row, notes, "off")
    on = _perf(config, workdir, gw, on_name, concurrency, row, notes, "on")
    if off is not None:
        row["off"] = off.as_dict()
        row.update(off_throughput=off.throughput, off_p50_us=off.p50_us, off_p99_us=off.p99_us)
    if on is not None:
        row["on"] = on.as_dict()
        row.update(on_throughput=on.throughput, on_p50_us=on.p50_us, on_p99_us=on.p99_us)
    on_off = ratio(row.get("on_throughput"), row.get("off_throughput"))
    row["on_off"] = on_off
    target = TARGET_ON_OFF.get(model)
    if target is not None and on_off is not None:
        row["on_off_target"] = f">= {target:g}x: {mark(on_off, at_least=target)}"
    ref = reference.get(model)
    if isinstance(ref, InProcess):
        row["in_process"] = ref.as_dict()
        row["in_process_rows_per_s"] = ref.rows_per_s
        vs = ratio(row.get("on_throughput"), ref.rows_per_s)
        row["on_vs_in_process"] = vs
        target = TARGET_VS_IN_PROCESS.get(model)
        if target is not None and vs is not None:
            row["vs_in_process_target"] = f">= {target:g}x: {mark(vs, at_least=target)}"
    elif isinstance(ref, str):
        notes.append(ref)
    if (off is not None and not off.stable) or (on is not None and not on.stable):
        notes.append("unstable")
    row["note"] = "; ".join(notes)
    return row


def _perf(
    config: BenchConfig,
    workdir: Path,
    gw: Gateway,
    name: str,
    concurrency: int,
    row: dict[str, Any],
    notes: list[str],
    side: str,
) -> PerfResult | None:
    """One perf_analyzer run; a failure goes into the row (error, note), not up.

    The row also gets `<side>_rows_per_batch`, `<side>_batches` and `<side>_cpu_us`
    (gateway CPU per request), from the gateway's counters over the run.
    """
    label = f"{name} concurrency {concurrency}"
    try:
        before = usage(gw, name)
        result = measure_logged(
            label,
            gw.url,
            name,
            workdir / f"batching-{name}-c{concurrency}.csv",
            concurrency=concurrency,
            **config.perf_settings(),
        )
        after = usage(gw, name)
        if before.counts is not None and after.counts is not None:
            delta = after.counts - before.counts
            row[f"{side}_rows_per_batch"] = delta.rows_per_batch
            row[f"{side}_batches"] = delta.execution_count
        row[f"{side}_cpu_us"] = cpu_us_per_request(before, after)
    except (PerfAnalyzerError, RuntimeError, OSError) as exc:
        # RuntimeError covers the client's InferenceError too; a dead gateway is
        # noticed by the caller's check_alive() right after. measure_logged has
        # logged a perf_analyzer failure already.
        if not isinstance(exc, PerfAnalyzerError):
            log(f"  {label}: failed: {exc}")
        row["error"] = "\n".join(filter(None, (row.get("error"), f"{name}: {exc}")))
        notes.append(f"{name}: {first_line(exc)}")
        return None
    return result


def _error_row(model: str, concurrency: int, error: str) -> dict[str, Any]:
    return {
        "model": model,
        "concurrency": concurrency,
        "error": error,
        "note": f"error: {error.splitlines()[0] if error else 'failed'}",
    }


# ---- the sweep that chose QUEUE_DELAY_US and SERVE_ARGS --------------------------------

SWEEP_DELAYS_US = (QUEUE_DELAY_US, 500, 5000)
# The defaults first, then the defaults before issue 21 and each half of them.
SWEEP_FLAGS: tuple[tuple[str, ...], ...] = (
    SERVE_ARGS,
    ("--max-inflight-batches", "2", "--intra-op-threads", "-1"),
    ("--max-inflight-batches", "2"),
    ("--intra-op-threads", "-1"),
    ("--intra-op-threads", "2"),
)


def sweep(config: BenchConfig, workdir: Path) -> str:
    """Every flag variant at QUEUE_DELAY_US; under SERVE_ARGS, the other delays too."""
    lines = [
        "| serve flags | model | delay (us) | c | off infer/s | on infer/s | rows/batch "
        "| on p50 (us) | on/off | off CPU/req (us) | on CPU/req (us) | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def add(flags: Sequence[str], rows: list[dict[str, Any]]) -> None:
        for r in rows:
            cells = [
                shlex.join(flags) or "(defaults)",
                str(r["model"]),
                str(r.get("delay_us", "-")),
                str(r["concurrency"]),
                *(
                    "-" if r.get(k) is None else f"{float(r[k]):,.{d}f}"
                    for k, d in (
                        ("off_throughput", 1),
                        ("on_throughput", 1),
                        ("on_rows_per_batch", 1),
                        ("on_p50_us", 0),
                        ("on_off", 2),
                        ("off_cpu_us", 0),
                        ("on_cpu_us", 0),
                    )
                ),
                str(r.get("note") or "-").replace("|", "\\|"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], file=sys.stderr, flush=True)

    for flags in SWEEP_FLAGS:
        delays = SWEEP_DELAYS_US if flags == SERVE_ARGS else SWEEP_DELAYS_US[:1]
        log(f"sweep: flags {shlex.join(flags) or '(defaults)'}, delays {delays}")
        add(
            flags,
            measure_variant(
                config, workdir, flags, delays, MODELS, CONCURRENCY, with_in_process=False
            ),
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m bench.batching", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--sweep", action="store_true", help="compare delays and serve flags")
    config, args = parse_config(parser, argv, ("batching",))
    with tempfile.TemporaryDirectory(prefix="infergate-bench-") as tmp:
        if args.sweep:
            print(sweep(config, Path(tmp)))
        else:
            print(batching_section(config, Path(tmp)).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
