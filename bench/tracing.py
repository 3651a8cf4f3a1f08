"""Section "tracing": throughput with OpenTelemetry tracing off vs on (100% sampled).

Two gateways, one after the other, serve the same temporary repository: `digits`
(its own config, no dynamic batching: the most requests per second, so the most
spans) and `mlp_large_on` (mlp_large with the batching section's dynamic batching).
perf_analyzer drives digits at concurrency 16 and mlp_large_on at 32, batch-1
requests, on each gateway:

- off: `OTEL_SDK_DISABLED=true` (and no OTLP endpoint): the no-op tracer;
- on: `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a real OTLP/gRPC trace receiver
  (tests/otlp_receiver.py's, counting spans only) that runs in this process on a
  thread with its own event loop, `OTEL_TRACES_SAMPLER=always_on`; the gateway's
  BatchSpanProcessor and OTLP exporter keep their defaults.

Spans received are checked against what the gateway should have exported: per
request a server span, a "queue wait" and a "backend" span, plus a "batch" span per
runtime call (requests and calls from ModelStatistics); fewer means the span
processor dropped some (its queue was full).

Target (issue 8): tracing costs at most 10% throughput.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp

from bench import harness
from bench.batching import QUEUE_DELAY_US, SERVE_ARGS
from bench.harness import GatewayError, PerfAnalyzerError, PerfResult, log
from bench.report import BenchConfig, Column, Section, first_line, mark, num, percent, ratio
from bench.repository import RepositoryError, Twin, make_repository, source_version_dir
from bench.statistics import ModelCounts, cpu_us_per_request, read_counts, usage
from tests.otlp_receiver import Receiver

TARGET_COST_PCT = 10.0
# (model in the bench repository, its twin, concurrency)
LOADS: tuple[tuple[str, Twin, int], ...] = (
    ("digits", Twin("digits"), 16),
    ("mlp_large_on", Twin("mlp_large", max_batch_size=32, queue_delay_us=QUEUE_DELAY_US), 32),
)
# Spans per request (server, queue wait, backend) and per runtime call (batch).
SPANS_PER_REQUEST = 3
SPANS_PER_BATCH = 1

TRACING_OFF: dict[str, str | None] = {
    "OTEL_SDK_DISABLED": "true",
    "OTEL_EXPORTER_OTLP_ENDPOINT": None,
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None,
}

COLUMNS = [
    Column("model", "model"),
    Column("concurrency", "concurrency"),
    Column("off (infer/s)", "off_throughput", num(1)),
    Column("off p50 (us)", "off_p50_us", num(0)),
    Column("on (infer/s)", "on_throughput", num(1)),
    Column("on p50 (us)", "on_p50_us", num(0)),
    Column("cost", "cost_pct", percent()),
    Column("target", "target"),
    Column("off CPU/req (us)", "off_cpu_us", num(0)),
    Column("on CPU/req (us)", "on_cpu_us", num(0)),
    Column("CPU cost", "cpu_cost_pct", percent()),
    Column("note", "note"),
]


@dataclass
class CountingReceiver(Receiver):
    """The tests' OTLP receiver, counting spans instead of keeping them.

    Converting every span to Python objects would take CPU from the gateway that
    shares this machine; counting is enough to prove the export happened.
    """

    span_count: int = 0

    async def Export(
        self,
        request: otlp.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> otlp.ExportTraceServiceResponse:
        self.exports += 1
        self.span_count += sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )
        return otlp.ExportTraceServiceResponse()


@contextmanager
def background_receiver() -> Iterator[CountingReceiver]:
    """A CountingReceiver served by an event loop on a thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="otlp-receiver", daemon=True)
    thread.start()
    receiver = CountingReceiver()
    try:
        asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(timeout=10)
        yield receiver
    finally:
        try:
            asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()


def tracing_on(receiver_port: int) -> dict[str, str | None]:
    return {
        "OTEL_SDK_DISABLED": None,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAME": "infergate-bench",
    }


def tracing_section(config: BenchConfig, workdir: Path) -> Section:
    serve_args = (*SERVE_ARGS, *config.serve_args)
    section = Section(
        key="tracing",
        title="Tracing: throughput with OpenTelemetry off vs on (100% sampled)",
        description=(
            "Two gateways in turn on one repository "
            f"(`{' '.join(serve_args) or 'default flags'}`): tracing off "
            "(`OTEL_SDK_DISABLED=true`), then on (`OTEL_TRACES_SAMPLER=always_on`, OTLP/gRPC "
            "export to a real trace receiver in the bench process, default batch span "
            "processor). Models pinned to onnxruntime; digits without dynamic batching or "
            "response cache (perf_analyzer repeats one input: every request would be a hit), "
            "mlp_large_on batches "
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

    _run(config, workdir, repository, serve_args, loads, rows, "off", TRACING_OFF)
    with background_receiver() as receiver:
        counts = _run(
            config, workdir, repository, serve_args, loads, rows, "on", tracing_on(receiver.port)
        )
        spans, exports = receiver.span_count, receiver.exports
    section.rows.extend(rows.values())
    for row in section.rows:
        off, on = row.get("off_throughput"), row.get("on_throughput")
        cost = None if off is None or on is None else ratio(off - on, off)
        if cost is not None:
            row["cost_pct"] = cost * 100
            verdict = mark(cost * 100, at_most=TARGET_COST_PCT)
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
            "Fewer spans than expected: the gateway's BatchSpanProcessor dropped some (its "
            "queue, OTEL_BSP_MAX_QUEUE_SIZE, was full), so the cost above is understated."
        )
    section.remarks.append(f"Target (issue 8): tracing costs at most {TARGET_COST_PCT:g}%.")
    return section


def _expected_spans(counts: dict[str, ModelCounts]) -> int:
    return sum(
        SPANS_PER_REQUEST * c.success_count + SPANS_PER_BATCH * c.execution_count
        for c in counts.values()
    )


def _run(
    config: BenchConfig,
    workdir: Path,
    repository: Path,
    serve_args: Sequence[str],
    loads: Sequence[tuple[str, Twin, int]],
    rows: dict[str, dict[str, Any]],
    mode: str,
    env: dict[str, str | None],
) -> dict[str, ModelCounts]:
    """Measure every load on one gateway; the models' counters just before it stops."""
    counts: dict[str, ModelCounts] = {}
    log(f"  tracing {mode}")
    try:
        with harness.gateway(
            repository,
            workdir / f"tracing-{mode}-gateway.log",
            serve_args=serve_args,
            env=env,
        ) as gw:
            for name, _, concurrency in loads:
                row = rows[name]
                before = usage(gw, name)
                result = _perf(config, workdir, gw, name, concurrency, mode, row)
                row[f"{mode}_cpu_us"] = cpu_us_per_request(before, usage(gw, name))
                if result is not None:
                    row[mode] = result.as_dict()
                    row[f"{mode}_throughput"] = result.throughput
                    row[f"{mode}_p50_us"] = result.p50_us
                    if not result.stable:
                        _note(row, f"{mode}: unstable")
                gw.check_alive()
            for name, _, _ in loads:
                try:
                    counts[name] = read_counts(gw.url, name)
                except RuntimeError as exc:
                    _note(rows[name], f"statistics: {first_line(exc)}")
    except GatewayError as exc:
        log(f"gateway failed: {exc}")
        for name, _, _ in loads:
            row = rows[name]
            row["error"] = "\n".join(filter(None, (row.get("error"), f"{mode}: {exc}")))
            _note(row, f"{mode}: gateway failed")
    return counts


def _perf(
    config: BenchConfig,
    workdir: Path,
    gw: harness.Gateway,
    name: str,
    concurrency: int,
    mode: str,
    row: dict[str, Any],
) -> PerfResult | None:
    log(f"  {name} concurrency {concurrency}, tracing {mode} ...")
    try:
        result = harness.measure(
            gw.url,
            name,
            workdir / f"tracing-{mode}-{name}.csv",
            concurrency=concurrency,
            window_ms=config.window_ms,
            stability_pct=config.stability_pct,
            max_trials=config.max_trials,
            extra_args=config.perf_args,
        )
    except PerfAnalyzerError as exc:
        log(f"  {name}, tracing {mode}: failed: {exc}")
        row["error"] = "\n".join(filter(None, (row.get("error"), f"{mode}: {exc}")))
        _note(row, f"{mode}: {first_line(exc)}")
        return None
    log(
        f"  {name} tracing {mode}: {result.throughput:,.1f} infer/s, "
        f"p50 {result.p50_us:,.0f} us, p99 {result.p99_us:,.0f} us"
    )
    return result


def _note(row: dict[str, Any], text: str) -> None:
    row["note"] = "; ".join(filter(None, (row.get("note"), text)))
