"""Section "tracing": throughput with OpenTelemetry tracing off vs on (100% sampled).

Three gateways, one per mode, serve the same temporary repository: `digits`
(its own config, no dynamic batching: the most requests per second, so the most
spans) and `mlp_large_on` (mlp_large with the batching section's dynamic batching).
perf_analyzer drives digits at concurrency 16 and mlp_large_on at 32, batch-1
requests, on each gateway:

- off: `OTEL_SDK_DISABLED=true` (and no OTLP endpoint): the no-op tracer;
- on: `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a real OTLP/gRPC trace receiver
  (tests/otlp_receiver.py's, counting spans only) in a process of its own
  (bench.otlp_sink, as a collector on the same host), `OTEL_TRACES_SAMPLER=always_on`;
  the gateway's export settings (OTEL_BSP_*) keep their defaults;
- sampled: the same at the sampling a production service would use
  (`parentbased_traceidratio`, SAMPLED_RATIO), to a receiver of its own so that the
  span check below stays exact.

Each round starts the three gateways afresh (an idle one costs nothing
measurable), measures every mode once per model, the order reversed each round, and
stops them. A cost is the median of the rounds' own costs, each from runs a minute
apart: this shared 2-core machine changes speed by 20% between minutes (the same
gateway with tracing off gave 1,440 and 1,860 infer/s in two runs), which a
comparison of runs far apart in time would read as a cost or a gain. Fresh
processes, because a gateway process keeps a speed of its own for its life: four
identical gateways with tracing off, measured in turn over rounds, kept their order
(one 10-17% slower than the rest in every round), so one process per mode for a
whole run turned that luck into a cost or a gain of up to 17%.

Spans received are checked against what the gateway should have exported: per
request a server span, a "queue wait" and a "backend" span, plus a "batch" span per
runtime call (requests and calls from ModelStatistics); fewer means the span
processor dropped some (its queue was full).

Target (issue 8): tracing costs at most 10% throughput.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.gateway_process import Gateway, GatewayError, in_turn, start_gateways
from bench.model_counts import ModelCounts, cpu_us_per_request, read_counts, usage
from bench.perf_analyzer import PerfAnalyzerError, measure_logged
from bench.progress import log
from bench.report import Column, Section, first_line, mark, num, percent
from bench.serve_settings import MAX_BATCH_SIZE, QUEUE_DELAY_US, SERVE_ARGS
from bench.tracing_modes import TRACING_OFF, receiver_process, tracing_on
from bench.twin_repository import RepositoryError, Twin, make_repository, source_version_dir

TARGET_COST_PCT = 10.0
SAMPLED_RATIO = 0.1
# Rounds of paired runs; the table gives medians. An odd count has a middle one.
ROUNDS = 9
# (model in the bench repository, its twin, concurrency)
LOADS: tuple[tuple[str, Twin, int], ...] = (
    ("digits", Twin("digits"), 16),
    (
        "mlp_large_on",
        Twin("mlp_large", max_batch_size=MAX_BATCH_SIZE, queue_delay_us=QUEUE_DELAY_US),
        32,
    ),
)
# Spans per request (server, queue wait, backend) and per runtime call (batch).
SPANS_PER_REQUEST = 3
SPANS_PER_BATCH = 1

COLUMNS = [
    Column("model", "model"),
    Column("concurrency", "concurrency"),
    Column("off (infer/s)", "off_throughput", num(1)),
    Column("off p50 (us)", "off_p50_us", num(0)),
    Column("on (infer/s)", "on_throughput", num(1)),
    Column("on p50 (us)", "on_p50_us", num(0)),
    Column("cost", "cost_pct", percent()),
    Column("target", "target"),
    Column(f"{SAMPLED_RATIO:.0%} sampled (infer/s)", "sampled_throughput", num(1)),
    Column(f"cost at {SAMPLED_RATIO:.0%}", "sampled_cost_pct", percent()),
    Column("off CPU/req (us)", "off_cpu_us", num(0)),
    Column("on CPU/req (us)", "on_cpu_us", num(0)),
    Column("CPU cost", "cpu_cost_pct", percent()),
    Column("note", "note"),
]


def tracing_section(config: BenchConfig, workdir: Path) -> Section:
    serve_args = (*SERVE_ARGS, *config.serve_args)
    section = Section(
        key="tracing",
        title="Tracing: throughput with OpenTelemetry off vs on (100% sampled)",
        description=(
            "Three gateways on one repository "
            f"(`{' '.join(serve_args) or 'default flags'}`), started afresh every round: "
            "tracing off "
            "(`OTEL_SDK_DISABLED=true`), on (`OTEL_TRACES_SAMPLER=always_on`, OTLP/gRPC "
            "export to a real trace receiver in a process of its own, bench.otlp_sink), "
            f"and on at {SAMPLED_RATIO:.0%} sampling (`parentbased_traceidratio`, to a "
            f"receiver of its own), measured in turn, {ROUNDS} rounds, the order reversed "
            "each round; the table gives the medians, the cost "
            "columns the median of each round's own cost, the note every round's off/on "
            "pair. Models pinned to onnxruntime; "
            "digits without dynamic batching or response cache (perf_analyzer repeats one "
            "input: every request would be a hit), mlp_large_on batches "
            f"(delay {QUEUE_DELAY_US} us). perf_analyzer, batch-1 synchronous requests; "
            "cost = (off - on) / off. CPU/req is the gateway process's CPU time (user + "
            "system) over the requests it answered during the run: on a busy machine it "
            "moves far less than throughput, and CPU cost = (on - off) / off. The receiver "
            "shares the cores with the gateway and perf_analyzer, as a collector on the same "
            "host would."
        ),
        columns=COLUMNS,
    )
    rows: dict[str, dict[str, Any]] = {}
    loads = []
    for name, twin, concurrency in LOADS:
        rows[name] = {"model": name, "concurrency": concurrency}
        try:
            source_version_dir(config.repository, twin.source)
        except RepositoryError as exc:
            rows[name].update(error=str(exc), note=str(exc))
            continue
        loads.append((name, twin, concurrency))
    if not loads:
        section.rows.extend(rows.values())
        return section
    repository = workdir / "tracing-repository"
    try:
        make_repository(repository, {n: t for n, t, _ in loads}, config.repository)
    except (RepositoryError, OSError) as exc:
        for row in rows.values():
            row.setdefault("error", f"repository: {exc}")
            row.setdefault("note", f"repository: {exc}")
        section.rows.extend(rows.values())
        return section

    rounds: list[dict[str, dict[str, Any]]] = []
    counts: dict[str, ModelCounts] = {}
    with (
        receiver_process(workdir, "on") as sink,
        receiver_process(workdir, "sampled") as sampled_sink,
    ):
        environments = {
            "off": TRACING_OFF,
            "on": tracing_on(sink.port),
            "sampled": tracing_on(sampled_sink.port, SAMPLED_RATIO),
        }
        for index in range(ROUNDS):
            log(f"  round {index + 1} of {ROUNDS}")
            one: dict[str, dict[str, Any]] = {name: {} for name in rows}
            # Fresh gateways every round (see the module docstring).
            try:
                with start_gateways(
                    repository,
                    environments,
                    lambda mode: workdir / f"tracing-{mode}-gateway.log",
                    serve_args=serve_args,
                ) as gateways:
                    for name, _, concurrency in loads:
                        for mode in in_turn(list(gateways), index):
                            gw = gateways[mode]
                            _measure(config, workdir, gw, name, concurrency, mode, one[name])
                    _add_counts(counts, gateways["on"], rows, [name for name, _, _ in loads])
            except GatewayError as exc:
                log(f"gateway failed: {exc}")
                for row in rows.values():
                    row["error"] = f"gateway: {exc}"
                    _note(row, "a gateway failed to start")
                break
            rounds.append(one)
    spans, exports = sink.counts()
    sampled_spans, _ = sampled_sink.counts()
    for name, row in rows.items():
        _merge_rounds(row, [r[name] for r in rounds])
    section.rows.extend(rows.values())
    for row in section.rows:
        cost = row.get("cost_pct")
        if cost is not None:
            verdict = mark(cost, at_most=TARGET_COST_PCT)
            row["target"] = f"<= {TARGET_COST_PCT:g}%: {verdict}"
        off_cpu, on_cpu = row.get("off_cpu_us"), row.get("on_cpu_us")
        if off_cpu and on_cpu is not None:
            row["cpu_cost_pct"] = (on_cpu - off_cpu) / off_cpu * 100
    expected = _expected_spans(counts)
    received = (
        f"Spans received by the OTLP receiver: {spans:,} in {exports:,} exports"
        + (
            f", of {expected:,} the gateway should have exported "
            f"({SPANS_PER_REQUEST} per request + {SPANS_PER_BATCH} per batch, from "
            f"ModelStatistics): {spans / expected:.1%}"
            if expected
            else ""
        )
        + "."
    )
    log(f"  {received}")
    section.remarks.append(received)
    if expected and not spans:
        section.notes.append(
            "**No span reached the receiver:** the gateway with tracing on exported nothing."
        )
    elif expected and spans < expected:
        section.remarks.append(
            "Fewer spans than expected: the gateway's span export queue dropped some (it "
            "was full: OTEL_BSP_MAX_QUEUE_SIZE), so the cost above is understated."
        )
    section.remarks.append(
        f"At {SAMPLED_RATIO:.0%} sampling (`parentbased_traceidratio`), its own receiver got "
        f"{sampled_spans:,} spans."
    )
    section.remarks.append(f"Target (issue 8): tracing costs at most {TARGET_COST_PCT:g}%.")
    return section


MEASURES = ("throughput", "p50_us", "cpu_us")


def _merge_rounds(row: dict[str, Any], rounds: Sequence[dict[str, Any]]) -> None:
    """Medians over the rounds into the row; every round's off/on pair in its note.

    A cost is a median of the rounds' own costs: each round measures the modes within
    a minute of each other, so a machine that slows for a while (this one's speed moves
    by 20% between minutes) shifts both sides of a pair, not one.
    """
    for mode in ("off", "on", "sampled"):
        for measure in MEASURES:
            values = [r[f"{mode}_{measure}"] for r in rounds if r.get(f"{mode}_{measure}")]
            if values:
                row[f"{mode}_{measure}"] = statistics.median(values)
        row[f"{mode}_rounds"] = [r.get(mode) for r in rounds]
    for r in rounds:
        for key in ("error", "note"):
            if r.get(key):
                row[key] = "; ".join(filter(None, (row.get(key), r[key])))
    for mode, key in (("on", "cost_pct"), ("sampled", "sampled_cost_pct")):
        costs = [
            (r["off_throughput"] - r[f"{mode}_throughput"]) / r["off_throughput"] * 100
            for r in rounds
            if r.get("off_throughput") and r.get(f"{mode}_throughput")
        ]
        if costs:
            row[key] = statistics.median(costs)
    pairs = [
        f"{r['off_throughput']:,.0f}/{r['on_throughput']:,.0f}"
        for r in rounds
        if r.get("off_throughput") and r.get("on_throughput")
    ]
    if pairs:
        _note(row, "rounds off/on infer/s: " + ", ".join(pairs))


def _add_counts(
    counts: dict[str, ModelCounts],
    gw: Gateway,
    rows: dict[str, dict[str, Any]],
    names: Sequence[str],
) -> None:
    """Add what this round's traced gateway served, for the spans it should export."""
    for name in names:
        try:
            counts[name] = counts.get(name, ModelCounts()) + read_counts(gw.url, name)
        except RuntimeError as exc:
            _note(rows[name], f"statistics: {first_line(exc)}")


def _expected_spans(counts: dict[str, ModelCounts]) -> int:
    return sum(
        SPANS_PER_REQUEST * c.success_count + SPANS_PER_BATCH * c.execution_count
        for c in counts.values()
    )


def _measure(
    config: BenchConfig,
    workdir: Path,
    gw: Gateway,
    name: str,
    concurrency: int,
    mode: str,
    row: dict[str, Any],
) -> None:
    """One perf_analyzer run of one model on one mode's gateway, into row."""
    try:
        gw.check_alive()
    except GatewayError as exc:
        _failed(row, mode, exc, "gateway failed")
        return
    before = usage(gw, name)
    try:
        result = measure_logged(
            f"{name} concurrency {concurrency}, tracing {mode}",
            gw.url,
            name,
            workdir / f"tracing-{mode}-{name}.csv",
            concurrency=concurrency,
            **config.perf_settings(),
        )
    except PerfAnalyzerError as exc:
        _failed(row, mode, exc, first_line(exc))
        result = None
    # Even a run perf_analyzer failed shows what the gateway spent on what it answered.
    row[f"{mode}_cpu_us"] = cpu_us_per_request(before, usage(gw, name))
    if result is None:
        return
    row[mode] = result.as_dict()
    row[f"{mode}_throughput"] = result.throughput
    row[f"{mode}_p50_us"] = result.p50_us
    if not result.stable:
        _note(row, f"{mode}: unstable")


def _failed(row: dict[str, Any], mode: str, exc: Exception, note: str) -> None:
    """A mode's failure into the row: the whole text in its error, `note` in its note."""
    row["error"] = "\n".join(filter(None, (row.get("error"), f"{mode}: {exc}")))
    _note(row, f"{mode}: {note}")


def _note(row: dict[str, Any], text: str) -> None:
    row["note"] = "; ".join(filter(None, (row.get("note"), text)))
