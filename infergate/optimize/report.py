"""Reports: a profile as Markdown, JSON and PNG plots; variants as a Markdown table.

Plots are drawn with matplotlib's Agg canvas directly (no pyplot, so no global
figure state and no display needed); without matplotlib the Markdown and JSON are
still written and the report says the plots were skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infergate.optimize import deps
from infergate.optimize.profiler import Measurement, ProfileReport
from infergate.optimize.store import StoredVariant, jsonable

INDICATIVE = (
    "Figures are indicative: short in-process runs on a shared machine. Compare arms "
    "side by side within one report, not across reports."
)


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    plots: tuple[Path, ...]
    notes: tuple[str, ...]  # e.g. why plots were skipped


def write_report(report: ProfileReport, directory: Path, stem: str = "profile") -> ReportFiles:
    """Write `<stem>.md`, `<stem>.json` and the plots into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    plots: tuple[Path, ...] = ()
    if deps.available("matplotlib"):
        plots = _plots(report, directory, stem)
    else:
        notes.append("plots skipped: " + deps.missing_reason("matplotlib"))
    md = directory / f"{stem}.md"
    _write(md, profile_markdown(report, [p.name for p in plots], notes))
    js = directory / f"{stem}.json"
    _write(js, json.dumps(jsonable(report.to_dict()), indent=2, allow_nan=False) + "\n")
    return ReportFiles(md, js, plots, tuple(notes))


def profile_markdown(
    report: ProfileReport, plots: Sequence[str] = (), notes: Sequence[str] = ()
) -> str:
    title = f"Profile of {report.model}" if report.model else "Profile"
    budget = report.settings.get("latency_budget_ms")
    lines = [f"# {title}", "", INDICATIVE, ""]
    lines += [
        f"Batch sizes {report.settings.get('batch_sizes')}, concurrency "
        f"{report.settings.get('concurrency')} threads, about "
        f"{report.settings.get('duration_s')} s each; latency budget: "
        f"{'none' if budget is None else f'{budget} ms'}; prices per device hour (USD): "
        f"{report.settings.get('prices_per_hour')}.",
        "",
        "## Best arm per objective (decided on p99)",
        "",
        "| objective | arm | batch | threads | value | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    for b in report.best:
        value = "" if b.value is None else f"{b.value:.4g} {b.unit}"
        lines.append(
            f"| {b.objective} | {b.arm or '-'} | {_n(b.batch_size)} | {_n(b.concurrency)} | "
            f"{value} | {b.note} |"
        )
    lines += [
        "",
        "## Arms",
        "",
        "| arm | backend | variant | device | USD/h | load s | load RSS MB |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for a in report.arms:
        lines.append(
            f"| {a.name} | {a.backend} | {a.variant} | {a.device} | {_f(a.price_per_hour)} | "
            f"{_f(a.load_s)} | {_mb(a.load_rss_bytes)} |"
        )
    lines += [
        "",
        "## Measurements",
        "",
        "| arm | batch | threads | calls | p50 ms | p99 ms | rows/s | CPU ms/row | "
        "caller CPU ms/row | RSS delta MB | USD per 1000 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in report.measurements:
        lines.append(
            f"| {m.arm} | {m.batch_size} | {m.concurrency} | {m.calls} | {m.p50_ms:.3f} | "
            f"{m.p99_ms:.3f} | {m.throughput_rows_s:.1f} | {_f(m.cpu_ms_per_row)} | "
            f"{_f(m.caller_cpu_ms_per_row)} | {_mb(m.rss_delta_bytes)} | "
            f"{_g(m.cost_per_1000_usd)} |"
        )
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def variants_markdown(variants: Sequence[StoredVariant]) -> str:
    """One row per stored variant: verdict and gate figures."""
    lines = [
        "| variant | verdict | top-1 agreement | accuracy (ref -> variant) | max abs err | "
        "mean rel err | parameters | build s |",
        "|---|---|---:|---|---:|---:|---|---:|",
    ]
    for v in variants:
        f = v.figures
        accuracy = ""
        if f.get("accuracy") is not None:
            accuracy = f"{f['reference_accuracy']:.4f} -> {f['accuracy']:.4f}"
        verdict = "admitted" if v.admitted else "rejected"
        if v.stale:
            verdict += " (stale)"
        params = ", ".join(f"{k}={val}" for k, val in v.parameters.items())
        lines.append(
            f"| {v.name} | {verdict} | {_f(f.get('top1_agreement'))} | {accuracy} | "
            f"{_f(f.get('max_abs_error'), 4)} | {_f(f.get('mean_rel_error'), 4)} | {params} | "
            f"{_f((v.record.get('build') or {}).get('seconds'), 2)} |"
        )
    return "\n".join(lines) + "\n"


def _plots(report: ProfileReport, directory: Path, stem: str) -> tuple[Path, ...]:
    figures = deps.need("matplotlib.figure", "the profile plots")
    agg = deps.need("matplotlib.backends.backend_agg", "the profile plots")

    arms = [a.name for a in report.arms]
    by_arm: dict[str, list[Measurement]] = {a: [] for a in arms}
    for m in report.measurements:
        by_arm.setdefault(m.arm, []).append(m)
    lowest = min((m.concurrency for m in report.measurements), default=1)
    highest = max((m.concurrency for m in report.measurements), default=1)
    batches = sorted({m.batch_size for m in report.measurements})
    written = []

    def figure(title: str, ylabel: str, xlabel: str = "batch size") -> tuple[Any, Any]:
        fig = figures.Figure(figsize=(7, 4.5), dpi=100)
        agg.FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        return fig, ax

    fig, ax = figure(f"Latency vs batch size ({lowest} thread)", "latency (ms)")
    for arm in arms:
        ms = sorted((m for m in by_arm[arm] if m.concurrency == lowest), key=lambda m: m.batch_size)
        if ms:
            line = ax.plot(
                [m.batch_size for m in ms], [m.p99_ms for m in ms], "o-", label=f"{arm} p99"
            )
            ax.plot(
                [m.batch_size for m in ms],
                [m.p50_ms for m in ms],
                "x--",
                alpha=0.6,
                color=line[0].get_color(),
                label=f"{arm} p50",
            )
    written.append(_save(fig, ax, directory / f"{stem}_latency_vs_batch.png", batches, log_y=True))

    fig, ax = figure(f"Throughput vs batch size ({highest} threads)", "rows per second")
    for arm in arms:
        ms = sorted(
            (m for m in by_arm[arm] if m.concurrency == highest), key=lambda m: m.batch_size
        )
        if ms:
            ax.plot([m.batch_size for m in ms], [m.throughput_rows_s for m in ms], "o-", label=arm)
    written.append(
        _save(fig, ax, directory / f"{stem}_throughput_vs_batch.png", batches, log_y=True)
    )

    fig, ax = figure("Lowest cost per 1000 inferences (any batch, threads)", "USD per 1000", "arm")
    costs = [
        min(
            (m.cost_per_1000_usd for m in by_arm[a] if m.cost_per_1000_usd is not None), default=0.0
        )
        for a in arms
    ]
    ax.bar(range(len(arms)), costs)
    ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
    written.append(_save(fig, ax, directory / f"{stem}_cost_per_1000.png", legend=False))
    return tuple(written)


def _save(
    fig: Any,
    ax: Any,
    path: Path,
    batches: Sequence[int] = (),
    log_y: bool = False,
    legend: bool = True,
) -> Path:
    if batches:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(batches), [str(b) for b in batches])
        ax.minorticks_off()
    if log_y:
        ax.set_yscale("log")
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _f(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return f"{value:.{digits}f}" if digits else str(value)
    return str(value)


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"
