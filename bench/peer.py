"""Section "peer": infergate next to the real NVIDIA Triton, and the do-nothing floor.

The same three models (bench/peer_models.py: mlp_small 256-512-10, cnn64 on
3x64x64, mlp_large 1024-4096-4096-1000) with the same batching on both sides
(`max_batch_size: 32`, dynamic batching with a 2000 us queue delay), driven by the
same perf_analyzer (this environment's, from the tritonclient wheel) with batch-1
requests: concurrency 16 for the small models, 32 for mlp_large; unary, and
`--streaming` too for mlp_small.

- infergate: `infergate serve` with its default flags (plus --serve-args), each model
  pinned to onnxruntime;
- Triton: tritonserver 2.51 from the nvidia-pytriton 0.7.0 wheel in a venv of its own,
  set up on first use (bench/peer_triton.py), onnxruntime (the same release) inside
  its python backend with one intra-op thread, one instance per model;
- the floor: a grpc.aio server that parses each request and answers with a fixed
  tensor (bench/peer_floor.py): what any Python front end costs at the least.

Every round starts the servers afresh and measures each load on each server in turn,
the order reversed every other round (bench/gateway_process.in_turn), so drift
within a round favours no side; the table gives the medians over the rounds per side,
and the ratio as the median of the rounds' own ratios (each from runs a minute
apart); the rounds column gives every round's figures. A ratio against a peer is
only ever taken within one run, both sides measured in turn.

Targets (issue 21): mlp_large and cnn64 >= 1.1x Triton's throughput at an equal or
lower p99; mlp_small unary >= 0.8x the floor; mlp_small streaming >= 0.8x Triton
streaming.

    python -m bench.peer --repository models/repository [--rounds 5] [--window-ms 2000]

runs the section alone (BENCH_PEER_ROUNDS sets the rounds under `python -m bench.run`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.config import BenchConfig, parse_config
from bench.gateway_process import GatewayError, gateway, in_turn
from bench.model_counts import Usage, cpu_us_per_request, read_counts
from bench.peer_floor import FloorModel, floor_server
from bench.peer_models import (
    CNN64,
    INPUT,
    MLP_LARGE,
    MLP_SMALL,
    MODELS,
    OUTPUT,
    PeerModel,
    PeerModelError,
    infergate_repository,
    model_files,
)
from bench.peer_process import ServerError
from bench.peer_triton import (
    INSTANCES,
    ORT_THREADS,
    PYTRITON,
    TritonEnv,
    TritonUnavailable,
    ensure_triton_env,
    triton_repository,
    triton_server,
)
from bench.perf_analyzer import PerfAnalyzerError, measure_logged
from bench.progress import log
from bench.report import Column, Section, first_line, mark, num, times
from bench.serve_settings import MAX_BATCH_SIZE, QUEUE_DELAY_US

ROUNDS = 5
ROUNDS_VARIABLE = "BENCH_PEER_ROUNDS"

INFERGATE = "infergate"
TRITON = "triton"
FLOOR = "floor"
PEER_LABELS = {TRITON: "Triton 2.51", FLOOR: "do-nothing floor"}


@dataclass(frozen=True)
class Target:
    """infergate's throughput at least `at_least` times the peer's (the median of the
    rounds' ratios); with `p99`, at an equal or lower p99 too (median p99 ratio <= 1)."""

    at_least: float
    p99: bool = False

    def text(self) -> str:
        return f">= {self.at_least:g}x" + (" at p99 <= peer's" if self.p99 else "")

    def verdict(self, comparison: Comparison) -> str:
        if comparison.ratio is None:
            return ""
        ok = mark(comparison.ratio, at_least=self.at_least) == "pass"
        if self.p99:
            if comparison.p99_ratio is None:
                return ""
            ok = ok and comparison.p99_ratio <= 1.0
        return f"{self.text()}: {'pass' if ok else 'miss'}"


@dataclass(frozen=True)
class Load:
    """One perf_analyzer load, run on infergate and on each of `peers`."""

    model: PeerModel
    concurrency: int
    streaming: bool
    peers: tuple[str, ...]
    targets: Mapping[str, Target] = field(default_factory=dict)

    @property
    def requests(self) -> str:
        return f"{'streaming' if self.streaming else 'unary'}, c={self.concurrency}"

    @property
    def key(self) -> str:
        return f"{self.model.name}-{'stream' if self.streaming else 'unary'}-c{self.concurrency}"


LOADS: tuple[Load, ...] = (
    Load(MLP_SMALL, 16, False, (TRITON, FLOOR), {FLOOR: Target(0.8)}),
    Load(MLP_SMALL, 16, True, (TRITON, FLOOR), {TRITON: Target(0.8)}),
    Load(CNN64, 16, False, (TRITON,), {TRITON: Target(1.1, p99=True)}),
    Load(MLP_LARGE, 32, False, (TRITON,), {TRITON: Target(1.1, p99=True)}),
)
FLOOR_MODEL = FloorModel(
    MLP_SMALL.name, INPUT, MLP_SMALL.input_dims, OUTPUT, MLP_SMALL.output_dims, MAX_BATCH_SIZE
)


# ---- figures: one run, rounds, comparisons ------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One perf_analyzer run on one server, or why there is none."""

    throughput: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    cpu_us: float | None = None  # the server's CPU per request answered (its children's too)
    rows_per_batch: float | None = None  # the server's own figure (ModelStatistics)
    stable: bool = True
    error: str | None = None
    result: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "throughput": self.throughput,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "cpu_us": self.cpu_us,
            "rows_per_batch": self.rows_per_batch,
            "stable": self.stable,
            "error": self.error,
            "perf_analyzer": self.result,
        }


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values present; None if there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass(frozen=True)
class Comparison:
    """infergate against one peer over the rounds (per-round lists, index = round)."""

    ours: Sequence[Sample | None]
    theirs: Sequence[Sample | None]

    def _pairs(self) -> list[tuple[Sample, Sample]]:
        return [
            (a, b)
            for a, b in zip(self.ours, self.theirs, strict=True)
            if a is not None and b is not None and a.throughput and b.throughput
        ]

    @property
    def ratios(self) -> list[float]:
        """Each round's own throughput ratio, infergate / peer."""
        return [a.throughput / b.throughput for a, b in self._pairs()]  # type: ignore[operator]

    @property
    def ratio(self) -> float | None:
        return median(self.ratios)

    @property
    def p99_ratio(self) -> float | None:
        return median([_ratio(a.p99_us, b.p99_us) for a, b in self._pairs()])

    def medians(self, side: Sequence[Sample | None]) -> dict[str, float | None]:
        present = [s for s in side if s is not None]
        return {
            key: median([getattr(s, key) for s in present])
            for key in ("throughput", "p50_us", "p99_us", "cpu_us", "rows_per_batch")
        }

    def rounds_text(self) -> str:
        """Every round's figures: 'r1 1,234/1,100 infer/s, p99 12.3/13.4 ms; r2 ...'."""
        parts = []
        for index, (a, b) in enumerate(zip(self.ours, self.theirs, strict=True)):
            parts.append(f"r{index + 1} {_pair(a, b)}")
        return "; ".join(parts)


def _figure(sample: Sample | None, key: str, scale: float, fmt: str) -> str:
    if sample is None:
        return "-"
    value = getattr(sample, key)
    if sample.error or value is None:
        return "x"
    return format(value / scale, fmt)


def _pair(a: Sample | None, b: Sample | None) -> str:
    return (
        f"{_figure(a, 'throughput', 1, ',.0f')}/{_figure(b, 'throughput', 1, ',.0f')} infer/s, "
        f"p99 {_figure(a, 'p99_us', 1000, '.1f')}/{_figure(b, 'p99_us', 1000, '.1f')} ms"
    )


def round_order(sides: Sequence[str], round_index: int) -> Sequence[str]:
    """The servers in the order one round measures them (reversed every other round)."""
    return in_turn(sides, round_index)


def rounds_setting(default: int = ROUNDS) -> int:
    """Rounds from BENCH_PEER_ROUNDS, else `default`."""
    text = os.environ.get(ROUNDS_VARIABLE, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{ROUNDS_VARIABLE} must be a positive integer, not {text!r}") from None
    if value < 1:
        raise ValueError(f"{ROUNDS_VARIABLE} must be a positive integer, not {text!r}")
    return value


# ---- the table --------------------------------------------------------------------------

COLUMNS = [
    Column("model", "model"),
    Column("requests", "requests"),
    Column("peer", "peer"),
    Column("infergate (infer/s)", "ours_throughput", num(1)),
    Column("peer (infer/s)", "peer_throughput", num(1)),
    Column("infergate/peer", "ratio", times()),
    Column("infergate p99 (us)", "ours_p99_us", num(0)),
    Column("peer p99 (us)", "peer_p99_us", num(0)),
    Column("p99 infergate/peer", "p99_ratio", times()),
    Column("infergate CPU/req (us)", "ours_cpu_us", num(0)),
    Column("peer CPU/req (us)", "peer_cpu_us", num(0)),
    Column("rows/batch infergate/peer", "rows_per_batch"),
    Column("target", "target"),
    Column("rounds: infergate/peer", "rounds"),
    Column("note", "note"),
]


def comparison_row(
    load: Load, peer: str, comparison: Comparison, skipped: str | None = None
) -> dict[str, Any]:
    """One row of the table: infergate against `peer` on `load`."""
    row: dict[str, Any] = {
        "model": load.model.name,
        "requests": load.requests,
        "peer": PEER_LABELS.get(peer, peer),
        "concurrency": load.concurrency,
        "streaming": load.streaming,
    }
    ours, theirs = comparison.medians(comparison.ours), comparison.medians(comparison.theirs)
    for key, value in ours.items():
        row[f"ours_{key}"] = value
    if skipped is not None:
        row["note"] = f"{PEER_LABELS.get(peer, peer)} skipped: {skipped}"
        row["rounds_detail"] = [s.as_dict() if s else None for s in comparison.ours]
        return row
    for key, value in theirs.items():
        row[f"peer_{key}"] = value
    row["ratio"] = comparison.ratio
    row["round_ratios"] = comparison.ratios
    row["p99_ratio"] = comparison.p99_ratio
    rows_ours, rows_theirs = ours["rows_per_batch"], theirs["rows_per_batch"]
    if rows_ours is not None or rows_theirs is not None:
        row["rows_per_batch"] = (
            f"{'-' if rows_ours is None else f'{rows_ours:.1f}'}/"
            f"{'-' if rows_theirs is None else f'{rows_theirs:.1f}'}"
        )
    target = load.targets.get(peer)
    if target is not None:
        row["target"] = target.verdict(comparison) or f"{target.text()}: -"
    row["rounds"] = comparison.rounds_text()
    row["rounds_detail"] = [
        {"infergate": a.as_dict() if a else None, peer: b.as_dict() if b else None}
        for a, b in zip(comparison.ours, comparison.theirs, strict=True)
    ]
    notes: list[str] = []
    errors: list[str] = []
    for side, samples in ((INFERGATE, comparison.ours), (peer, comparison.theirs)):
        for index, sample in enumerate(samples):
            if sample is None:
                continue
            if sample.error:
                errors.append(f"round {index + 1}, {side}: {sample.error}")
                notes.append(f"r{index + 1} {side}: {sample.error.splitlines()[0]}")
            elif not sample.stable:
                notes.append(f"r{index + 1} {side}: unstable")
    if errors:
        row["error"] = "\n".join(errors)
    row["note"] = "; ".join(notes)
    return row


# ---- the run ------------------------------------------------------------------------------


class Server(Protocol):
    """What a measurement needs of a server: infergate's Gateway and ServerProcess."""

    @property
    def url(self) -> str: ...

    def cpu_seconds(self) -> float | None: ...

    def check_alive(self) -> None: ...


def _usage(server: Server, model: str) -> Usage:
    try:
        counts = read_counts(server.url, model)
    except Exception:  # the client's InferenceError, or a dead channel: no counts
        counts = None
    return Usage(server.cpu_seconds(), counts)


def measure(
    config: BenchConfig, workdir: Path, server: Server, side: str, load: Load, label: str
) -> Sample:
    """One perf_analyzer run of `load` on `server`; a failure becomes the sample's error."""
    try:
        server.check_alive()
    except (GatewayError, ServerError) as exc:
        return Sample(error=f"{side} died: {first_line(exc)}")
    before = _usage(server, load.model.name)
    try:
        result = measure_logged(
            label,
            server.url,
            load.model.name,
            workdir / f"peer-{side}-{load.key}.csv",
            concurrency=load.concurrency,
            streaming=load.streaming,
            **config.perf_settings(),
        )
    except (PerfAnalyzerError, OSError) as exc:
        return Sample(error=str(exc))
    after = _usage(server, load.model.name)
    rows = None
    if before.counts is not None and after.counts is not None:
        rows = (after.counts - before.counts).rows_per_batch
    return Sample(
        throughput=result.throughput,
        p50_us=result.p50_us,
        p99_us=result.p99_us,
        cpu_us=cpu_us_per_request(before, after),
        rows_per_batch=rows,
        stable=result.stable,
        result=result.as_dict(),
    )


@dataclass
class Run:
    """Everything measured: samples[(load key, side)][round]."""

    rounds: int
    samples: dict[tuple[str, str], list[Sample | None]] = field(default_factory=dict)
    triton_version: str | None = None

    def put(self, load: Load, side: str, index: int, sample: Sample) -> None:
        self.samples.setdefault((load.key, side), [None] * self.rounds)[index] = sample

    def get(self, load: Load, side: str) -> list[Sample | None]:
        return self.samples.get((load.key, side), [None] * self.rounds)


def run_rounds(
    config: BenchConfig,
    workdir: Path,
    repositories: Mapping[str, Path],
    triton: TritonEnv | None,
    rounds: int,
    loads: Sequence[Load] = LOADS,
) -> Run:
    run = Run(rounds)
    models = sorted({load.model.name for load in loads})
    sides = [INFERGATE, *([TRITON] if triton is not None else [])]
    if any(FLOOR in load.peers for load in loads):
        sides.append(FLOOR)
    for index in range(rounds):
        log(f"  round {index + 1} of {rounds}")
        # Fresh servers every round: a server process keeps a speed of its own for its
        # life (bench/tracing.py measured up to 17% between identical gateways).
        with ExitStack() as stack:
            servers: dict[str, Server] = {}
            failed: dict[str, str] = {}
            for side in round_order(sides, index):
                server = _start(stack, side, config, workdir, repositories, triton, models, failed)
                if server is not None:
                    servers[side] = server
            if triton is not None and TRITON in servers and run.triton_version is None:
                run.triton_version = _server_version(servers[TRITON].url)
            for load in loads:
                present = [s for s in sides if s == INFERGATE or s in load.peers]
                for side in round_order(present, index):
                    if side in failed:
                        run.put(load, side, index, Sample(error=failed[side]))
                        continue
                    label = f"{load.model.name} {load.requests} on {side} (round {index + 1})"
                    sample = measure(config, workdir, servers[side], side, load, label)
                    run.put(load, side, index, sample)
    return run


def _start(
    stack: ExitStack,
    side: str,
    config: BenchConfig,
    workdir: Path,
    repositories: Mapping[str, Path],
    triton: TritonEnv | None,
    models: Sequence[str],
    failed: dict[str, str],
) -> Server | None:
    try:
        if side == INFERGATE:
            return stack.enter_context(
                gateway(
                    repositories[INFERGATE],
                    workdir / "peer-infergate.log",
                    serve_args=config.serve_args,
                )
            )
        if side == TRITON:
            assert triton is not None
            return stack.enter_context(
                triton_server(
                    triton, repositories[TRITON], workdir, workdir / "peer-triton.log", models
                )
            )
        return stack.enter_context(floor_server(FLOOR_MODEL, workdir / "peer-floor.log"))
    except (GatewayError, ServerError, OSError) as exc:
        log(f"  {side} failed to start: {exc}")
        failed[side] = f"{side} failed to start: {first_line(exc)}"
        return None


def _server_version(url: str) -> str | None:
    """'triton 2.51.0', say: the server's own name and version (ServerMetadata)."""
    import grpc

    from infergate.protocol import inference_pb2 as pb
    from infergate.protocol import inference_pb2_grpc as pb_grpc

    try:
        with grpc.insecure_channel(url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            meta = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5.0)
    except grpc.RpcError:  # only a label for the report
        return None
    return f"{meta.name} {meta.version}".strip() or None


# ---- the section --------------------------------------------------------------------------


def _ort_version() -> str | None:
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def peer_section(config: BenchConfig, workdir: Path, rounds: int | None = None) -> Section:
    try:
        rounds = rounds or rounds_setting()
    except ValueError as exc:
        rounds = ROUNDS
        log(f"  {exc}; {ROUNDS} rounds")
    serve_flags = " ".join(config.serve_args) or "default flags"
    section = Section(
        key="peer",
        title="Peer: infergate vs the real Triton, and the do-nothing floor",
        description=(
            "The same models on each server, each with `max_batch_size: "
            f"{MAX_BATCH_SIZE}` and dynamic batching (`max_queue_delay_microseconds: "
            f"{QUEUE_DELAY_US}`): " + "; ".join(f"`{m.name}` {m.what}" for m in MODELS) + ". "
            f"infergate: `infergate serve` ({serve_flags}), models pinned to onnxruntime. "
            f"Triton: tritonserver from `{PYTRITON}` (a venv of its own), onnxruntime "
            f"inside its python backend, {ORT_THREADS} intra-op thread, {INSTANCES} "
            "instance per model. Floor: a grpc.aio server that parses each request and "
            "answers with a fixed tensor (bench/peer_floor.py), the least any Python front "
            "end costs. perf_analyzer (this environment's) drives all of them over gRPC with "
            f"batch-1 requests. {rounds} round{'s' if rounds != 1 else ''}: each starts "
            "the servers afresh and measures each load on each server in turn, the order "
            "reversed every other round; "
            "throughput and p99 are medians over the rounds, infergate/peer the median of "
            "the rounds' own ratios, p99 infergate/peer likewise; CPU/req is each server's "
            "process CPU (user + system, Triton's python-backend stubs included) per request "
            "it answered (ModelStatistics), rows/batch the servers' own batch sizes. The "
            "rounds column gives every round's figures (x: failed). Client and servers "
            "share the machine's cores."
        ),
        columns=COLUMNS,
    )
    try:
        files = model_files(workdir / "peer-models", config.repository)
    except PeerModelError as exc:
        section.notes.append(f"**Models unavailable:** {exc}")
        return section
    repositories = {INFERGATE: infergate_repository(workdir / "peer-infergate", files)}

    triton: TritonEnv | None = None
    skipped: str | None = None
    try:
        triton = ensure_triton_env()
        repositories[TRITON] = triton_repository(workdir / "peer-triton", files)
    except (TritonUnavailable, OSError) as exc:
        skipped = str(exc)
        log(f"  Triton skipped: {skipped}")
        section.remarks.append(f"**Triton skipped:** {skipped}")

    run = run_rounds(config, workdir, repositories, triton, rounds)
    for load in LOADS:
        for peer in load.peers:
            comparison = Comparison(run.get(load, INFERGATE), run.get(load, peer))
            section.rows.append(
                comparison_row(load, peer, comparison, skipped if peer == TRITON else None)
            )
    if triton is not None:
        section.remarks.append(
            f"Triton: {run.triton_version or 'tritonserver'} ({triton.describe()}); "
            f"infergate: onnxruntime {_ort_version()}."
        )
    section.remarks.append(
        "Targets (issue 21): mlp_large and cnn64 >= 1.1x Triton's throughput at an equal or "
        "lower p99; mlp_small unary >= 0.8x the do-nothing floor; mlp_small streaming >= "
        "0.8x Triton streaming."
    )
    return section


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m bench.peer", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds (default {ROUNDS})")
    config, args = parse_config(parser, argv, ("peer",))
    with tempfile.TemporaryDirectory(prefix="infergate-bench-") as tmp:
        section = peer_section(config, Path(tmp), rounds=args.rounds)
    print(section.markdown())
    return 1 if section.failed else 0


if __name__ == "__main__":
    sys.exit(main())
