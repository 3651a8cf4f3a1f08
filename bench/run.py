"""Load benchmarks: the gateway, started through its CLI, driven by perf_analyzer.

    python -m bench.run --repository models/repository [--out bench/results]
        [--models digits,cnn,mlp_large] [--concurrency 1,16] [--window-ms 2000]

Prints a markdown table and writes it, with a JSON file of every number, to
OUT/<UTC timestamp>.md and .json, and OUT/latest.md. Progress goes to stderr.

A report is a list of sections. A section is a function (BenchConfig, workdir) ->
Section (bench/report.py) that starts whatever gateways it needs
(gateway_process.gateway), measures with perf_analyzer.measure, records failures in
its rows instead of raising, and stops every gateway it started; register it in
SECTIONS to make it selectable with --sections. Sections: models
(bench/per_model.py), batching (bench/batching.py), cache (bench/cache.py), backends
(bench/backends.py), routing (bench/routing.py), tracing (bench/tracing.py), variants
(bench/variants.py), overload (bench/overload.py), isolation (bench/isolation.py),
peer (bench/peer.py: the real Triton and the do-nothing floor), shm (bench/shm.py),
scaleout (bench/scaleout.py).

Imports run one way: this module -> the sections -> the helpers they share
(tests/test_bench_layering.py checks); nothing imports this module.
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

from bench.backends import backends_section
from bench.batching import batching_section
from bench.cache import cache_section
from bench.config import ROOT, BenchConfig, parse_config
from bench.isolation import isolation_section
from bench.machine import machine_info, machine_summary
from bench.overload import overload_section
from bench.peer import peer_section
from bench.per_model import models_section
from bench.progress import log
from bench.report import Section
from bench.routing import routing_section
from bench.scaleout import scaleout_section
from bench.shm import shm_section
from bench.tracing import tracing_section
from bench.variants import variants_section

# The report's sections, in the order they run and appear; --sections picks some.
SECTIONS: dict[str, Callable[[BenchConfig, Path], Section]] = {
    "models": models_section,
    "batching": batching_section,
    "cache": cache_section,
    "backends": backends_section,
    "routing": routing_section,
    "tracing": tracing_section,
    "variants": variants_section,
    "overload": overload_section,
    "isolation": isolation_section,
    "peer": peer_section,
    "shm": shm_section,
    "scaleout": scaleout_section,
}


# ---- the report ------------------------------------------------------------------


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


def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=(__doc__ or "").splitlines()[0]
    )
    config, _ = parse_config(parser, argv, tuple(SECTIONS))
    return config


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every gateway context stops its gateway.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = datetime.now(UTC).replace(microsecond=0)
    t0 = time.monotonic()
    try:
        machine = machine_info(ROOT)
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
