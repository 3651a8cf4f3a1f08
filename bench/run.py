"""Load benchmarks: the gateway, started through its CLI, driven by perf_analyzer.

    python -m bench.run --repository models/repository [--out bench/results]
        [--models digits,cnn,mlp_large] [--concurrency 1,16] [--window-ms 2000]

Prints a markdown table and writes it, with a JSON file of every number, to
OUT/<UTC timestamp>.md and .json, and OUT/latest.md. Progress goes to stderr.

A report is a list of sections. A section is a function (BenchConfig, workdir) ->
Section (bench/report.py) that starts whatever gateways it needs (harness.gateway),
measures with harness.measure, records failures in its rows instead of raising, and
stops every gateway it started; register it in SECTIONS to make it selectable with
--sections. Sections: models (here), batching (bench/batching.py), cache
(bench/cache.py), tracing (bench/tracing.py).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import harness
from bench.backends import backends_section
from bench.batching import batching_section
from bench.cache import cache_section
from bench.harness import GatewayError, PerfAnalyzerError, log
from bench.report import BenchConfig, Column, Section, first_line, num
from bench.routing import routing_section
from bench.tracing import tracing_section

ROOT = Path(__file__).resolve().parents[1]


# ---- sections ------------------------------------------------------------------------

PER_MODEL_COLUMNS = [
    Column("model", "model"),
    Column("concurrency", "concurrency"),
    Column("throughput (infer/s)", "throughput", num(1)),
    Column("p50 (us)", "p50_us", num(0)),
    Column("p99 (us)", "p99_us", num(0)),
    Column("note", "note"),
]


def models_section(config: BenchConfig, workdir: Path) -> Section:
    """Each model at each concurrency, batch-1 requests, one gateway with its defaults."""
    section = Section(
        key="models",
        title="Throughput and latency per model",
        description=(
            "One gateway (default settings"
            + (f", `{shlex.join(config.serve_args)}`" if config.serve_args else "")
            + "); perf_analyzer over gRPC, batch-1 requests, "
            + ("asynchronous" if "--async" in config.perf_args else "synchronous")
            + " calls at a fixed concurrency. Latency is client-side, in microseconds."
        ),
        columns=PER_MODEL_COLUMNS,
    )
    missing = {m for m in config.models if not (config.repository / m).is_dir()}
    if missing == set(config.models):
        for model in config.models:
            section.rows.extend(_missing_rows(config, model))
        return section
    try:
        with harness.gateway(
            config.repository, workdir / "models-gateway.log", serve_args=config.serve_args
        ) as gw:
            for model in config.models:
                if model in missing:
                    section.rows.extend(_missing_rows(config, model))
                    continue
                for concurrency in config.concurrency:
                    section.rows.append(_measure_row(config, gw, model, concurrency, workdir))
                    gw.check_alive()
    except GatewayError as exc:
        section.notes.append(f"**gateway failed:** {exc}")
        log(f"gateway failed: {exc}")
    return section


def _missing_rows(config: BenchConfig, model: str) -> list[dict[str, Any]]:
    return [
        {
            "model": model,
            "concurrency": c,
            "error": f"no model {model!r} in {config.repository}",
            "note": "not in the repository (make models?)",
        }
        for c in config.concurrency
    ]


def _measure_row(
    config: BenchConfig, gw: harness.Gateway, model: str, concurrency: int, workdir: Path
) -> dict[str, Any]:
    log(f"  {model} concurrency {concurrency} ...")
    try:
        result = harness.measure(
            gw.url,
            model,
            workdir / f"{model}-c{concurrency}.csv",
            concurrency=concurrency,
            **config.perf_settings(),
        )
    except PerfAnalyzerError as exc:
        log(f"  {model} concurrency {concurrency}: failed: {exc}")
        return {
            "model": model,
            "concurrency": concurrency,
            "error": str(exc),
            "note": f"error: {first_line(exc)}",
        }
    log(
        f"  {model} concurrency {concurrency}: {result.throughput:,.1f} infer/s, "
        f"p50 {result.p50_us:,.0f} us, p99 {result.p99_us:,.0f} us"
        + ("" if result.stable else " (unstable)")
    )
    row = result.as_dict()
    row["note"] = "" if result.stable else "unstable"
    return row


# The report's sections, in the order they run and appear; --sections picks some.
SECTIONS: dict[str, Callable[[BenchConfig, Path], Section]] = {
    "models": models_section,
    "batching": batching_section,
    "cache": cache_section,
    "backends": backends_section,
    "routing": routing_section,
    "tracing": tracing_section,
}


# ---- the report ------------------------------------------------------------------


def machine_summary(machine: dict[str, Any]) -> str:
    gpus = ", ".join(machine.get("gpus") or []) or "none"
    return (
        f"- machine: {machine.get('nproc')} CPUs usable ({machine.get('cpu_count')} online), "
        f"{machine.get('cpu_model')}; GPUs: {gpus}\n"
        f"- software: onnxruntime {machine.get('onnxruntime')}, grpcio {machine.get('grpcio')}, "
        f"perf_analyzer {machine.get('perf_analyzer')}, Python {machine.get('python')}, "
        f"infergate {machine.get('infergate')} (git {machine.get('git_commit')})\n"
        f"- platform: {machine.get('platform')}"
    )


def render_markdown(
    started: datetime, machine: dict[str, Any], config: BenchConfig, sections: Sequence[Section]
) -> str:
    header = [
        f"# infergate benchmark, {started.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        "",
        machine_summary(machine),
        f"- perf_analyzer: window {config.window_ms} ms, stability {config.stability_pct:g}%, "
        f"at most {config.max_trials} windows"
        + (f", extra args `{shlex.join(config.perf_args)}`" if config.perf_args else "")
        + "; the client shares the machine with the gateway",
        "",
    ]
    return "\n".join(header) + "\n" + "\n".join(s.markdown() for s in sections)


def write_report(
    config: BenchConfig,
    started: datetime,
    machine: dict[str, Any],
    sections: Sequence[Section],
) -> tuple[Path, Path, str]:
    config.out.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y%m%dT%H%M%SZ")
    markdown = render_markdown(started, machine, config, sections)
    md_path = config.out / f"{stem}.md"
    json_path = config.out / f"{stem}.json"
    md_path.write_text(markdown)
    (config.out / "latest.md").write_text(markdown)
    document = {
        "started": started.isoformat(),
        "machine": machine,
        "config": config.as_dict(),
        "sections": [s.as_dict() for s in sections],
    }
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    return md_path, json_path, markdown


# ---- command line -----------------------------------------------------------------


def _csv_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in _csv_list(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"want comma-separated integers, got {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"want positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--repository", type=Path, required=True, help="model repository")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--models", type=_csv_list, default=("digits", "cnn", "mlp_large"))
    parser.add_argument("--concurrency", type=_int_list, default=(1, 16))
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer window")
    parser.add_argument("--stability-pct", type=float, default=15.0)
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument(
        "--serve-args", default="", help="extra `infergate serve` flags, e.g. '--no-gpu'"
    )
    parser.add_argument("--perf-args", default="", help="extra perf_analyzer flags, e.g. '--async'")
    parser.add_argument(
        "--sections",
        type=_csv_list,
        default=tuple(SECTIONS),
        help=f"sections to run, of {', '.join(SECTIONS)}",
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    if not args.repository.is_dir():
        parser.error(f"no repository at {args.repository}")
    return BenchConfig(
        repository=args.repository.resolve(),
        out=args.out,
        models=args.models,
        concurrency=args.concurrency,
        window_ms=args.window_ms,
        stability_pct=args.stability_pct,
        max_trials=args.max_trials,
        serve_args=tuple(shlex.split(args.serve_args)),
        perf_args=tuple(shlex.split(args.perf_args)),
        sections=args.sections,
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every gateway context stops its gateway.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = datetime.now(UTC).replace(microsecond=0)
    t0 = time.monotonic()
    try:
        machine = harness.machine_info(ROOT)
        sections: list[Section] = []
        with tempfile.TemporaryDirectory(prefix="infergate-bench-") as tmp:
            for key in config.sections:
                log(f"section {key}")
                sections.append(SECTIONS[key](config, Path(tmp)))
    except KeyboardInterrupt:
        log("interrupted; no report written")
        return 130
    md_path, json_path, markdown = write_report(config, started, machine, sections)
    print(markdown)
    log(f"done in {time.monotonic() - t0:.0f}s: {md_path}, {json_path}")
    return 1 if any(s.failed for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
