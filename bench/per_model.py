"""Section "models": throughput and latency of each model at each concurrency, batch-1
requests, on one gateway with its default settings."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.gateway_process import Gateway, GatewayError, gateway
from bench.perf_analyzer import PerfAnalyzerError, measure_logged
from bench.progress import log
from bench.report import Column, Section, first_line, num

COLUMNS = [
    Column("model", "model"),
    Column("concurrency", "concurrency"),
    Column("throughput (infer/s)", "throughput", num(1)),
    Column("p50 (us)", "p50_us", num(0)),
    Column("p99 (us)", "p99_us", num(0)),
    Column("note", "note"),
]


def models_section(config: BenchConfig, workdir: Path) -> Section:
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
        columns=COLUMNS,
    )
    missing = {m for m in config.models if not (config.repository / m).is_dir()}
    if missing == set(config.models):
        for model in config.models:
            section.rows.extend(_missing_rows(config, model))
        return section
    try:
        with gateway(
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
    config: BenchConfig, gw: Gateway, model: str, concurrency: int, workdir: Path
) -> dict[str, Any]:
    try:
        result = measure_logged(
            f"{model} concurrency {concurrency}",
            gw.url,
            model,
            workdir / f"{model}-c{concurrency}.csv",
            concurrency=concurrency,
            **config.perf_settings(),
        )
    except PerfAnalyzerError as exc:
        return {
            "model": model,
            "concurrency": concurrency,
            "error": str(exc),
            "note": f"error: {first_line(exc)}",
        }
    row = result.as_dict()
    row["note"] = "" if result.stable else "unstable"
    return row
