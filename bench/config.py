"""A benchmark run's settings (BenchConfig) and the command line flags that set them.

`python -m bench.run` reads them for the whole report; a section's own command
(`python -m bench.batching`) reads the same flags, with its own added, through
parse_config, so both accept the same settings.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchConfig:
    repository: Path
    out: Path
    models: tuple[str, ...]
    concurrency: tuple[int, ...]
    window_ms: int
    stability_pct: float
    max_trials: int
    serve_args: tuple[str, ...]
    perf_args: tuple[str, ...]
    sections: tuple[str, ...]

    def perf_settings(self) -> dict[str, Any]:
        """perf_analyzer.measure's settings from this config."""
        return {
            "window_ms": self.window_ms,
            "stability_pct": self.stability_pct,
            "max_trials": self.max_trials,
            "extra_args": self.perf_args,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": str(self.repository),
            "models": list(self.models),
            "concurrency": list(self.concurrency),
            "window_ms": self.window_ms,
            "stability_pct": self.stability_pct,
            "max_trials": self.max_trials,
            "serve_args": list(self.serve_args),
            "perf_args": list(self.perf_args),
            "sections": list(self.sections),
        }


def parse_config(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, sections: Sequence[str]
) -> tuple[BenchConfig, argparse.Namespace]:
    """Add the config's flags to `parser`, parse `argv` and check it.

    `sections` are the ones this command can run (all of them by default); the
    namespace is returned too, for any flags the caller added of its own.
    """
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
        default=tuple(sections),
        help=f"sections to run, of {', '.join(sections)}",
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections if s not in sections]
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(sections)}")
    if not args.repository.is_dir():
        parser.error(f"no repository at {args.repository}")
    config = BenchConfig(
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
    return config, args


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
