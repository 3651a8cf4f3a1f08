"""perf_analyzer runs: Triton's C++ load generator (shipped in the tritonclient wheel)
driving a gateway over gRPC, its command line and its CSV report parsed."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.progress import log

BIN = Path(sys.executable).parent


class PerfAnalyzerError(RuntimeError):
    def __init__(self, message: str, *, unstable: bool = False) -> None:
        super().__init__(message)
        self.unstable = unstable


@dataclass(frozen=True)
class PerfResult:
    """One perf_analyzer measurement (one model, one concurrency)."""

    model: str
    concurrency: int
    batch_size: int
    streaming: bool
    throughput: float  # inferences per second
    p50_us: float
    p90_us: float
    p95_us: float
    p99_us: float
    avg_us: float | None  # client average latency, from the text output
    stable: bool  # False: perf_analyzer's stability criterion was relaxed to get a number
    command: list[str]
    csv_row: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """The figures a progress line shows."""
        return (
            f"{self.throughput:,.1f} infer/s, p50 {self.p50_us:,.0f} us, "
            f"p99 {self.p99_us:,.0f} us" + ("" if self.stable else " (unstable)")
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "concurrency": self.concurrency,
            "batch_size": self.batch_size,
            "streaming": self.streaming,
            "throughput": self.throughput,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p95_us": self.p95_us,
            "p99_us": self.p99_us,
            "avg_us": self.avg_us,
            "stable": self.stable,
            "command": self.command,
            "csv_row": self.csv_row,
        }


def perf_analyzer_path() -> Path:
    path = BIN / "perf_analyzer"
    if not path.exists():
        raise PerfAnalyzerError(
            f"perf_analyzer not found next to {sys.executable}; "
            "install the dev extras (tritonclient[grpc])"
        )
    return path


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer links libcudart.so.12 even on CPU; nvidia-cuda-runtime-cu12 has it."""
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime  # type: ignore[import-untyped]
    except ImportError:
        return env
    lib = os.path.join(next(iter(nvidia.cuda_runtime.__path__)), "lib")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (lib, env.get("LD_LIBRARY_PATH")) if p)
    return env


_AVG_LATENCY = re.compile(r"Avg latency:\s*([0-9.]+)\s*usec")
_UNSTABLE = "Failed to obtain stable measurement"


def run_perf_analyzer(
    url: str,
    model: str,
    csv_path: Path,
    *,
    concurrency: int,
    batch_size: int = 1,
    window_ms: int = 2000,
    stability_pct: float = 15.0,
    max_trials: int = 10,
    streaming: bool = False,
    extra_args: Sequence[str] = (),
) -> PerfResult:
    """Run perf_analyzer once at a fixed concurrency and parse its CSV report.

    Raises PerfAnalyzerError (with `unstable` set when the only problem was that the
    latency did not settle within `max_trials` windows).
    """
    csv_path.unlink(missing_ok=True)
    command = [
        str(perf_analyzer_path()),
        "-i",
        "grpc",
        "-u",
        url,
        "-m",
        model,
        "-b",
        str(batch_size),
        "--concurrency-range",
        str(concurrency),
        "--measurement-interval",
        str(window_ms),
        "--stability-percentage",
        str(stability_pct),
        "--max-trials",
        str(max_trials),
        "-f",
        str(csv_path),
        *(["--streaming"] if streaming else []),
        *extra_args,
    ]
    timeout_s = window_ms / 1000 * (max_trials + 3) + 60
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=perf_analyzer_env(),
        )
    except subprocess.TimeoutExpired as exc:
        raise PerfAnalyzerError(f"perf_analyzer ran past {timeout_s:.0f}s") from exc
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or not csv_path.exists():
        tail = "\n".join(output.strip().splitlines()[-15:])
        what = f"exited with {proc.returncode}" + ("" if proc.returncode else " but wrote no CSV")
        raise PerfAnalyzerError(f"perf_analyzer {what}:\n{tail}", unstable=_UNSTABLE in output)
    return _parse(csv_path, proc.stdout, model, concurrency, batch_size, streaming, command)


def _parse(
    csv_path: Path,
    stdout: str,
    model: str,
    concurrency: int,
    batch_size: int,
    streaming: bool,
    command: list[str],
) -> PerfResult:
    """The one row of perf_analyzer's CSV report, and the average from its text output."""
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    if len(rows) != 1:
        raise PerfAnalyzerError(f"expected one row in {csv_path}, found {len(rows)}")
    row = rows[0]
    avg = _AVG_LATENCY.search(stdout)
    return PerfResult(
        model=model,
        concurrency=concurrency,
        batch_size=batch_size,
        streaming=streaming,
        throughput=float(row["Inferences/Second"]),
        p50_us=float(row["p50 latency"]),
        p90_us=float(row["p90 latency"]),
        p95_us=float(row["p95 latency"]),
        p99_us=float(row["p99 latency"]),
        avg_us=float(avg.group(1)) if avg else None,
        stable=True,
        command=command,
        csv_row=dict(row),
    )


def measure(
    url: str,
    model: str,
    csv_path: Path,
    *,
    concurrency: int,
    relax_if_unstable: bool = True,
    **kwargs: Any,
) -> PerfResult:
    """run_perf_analyzer, retried once accepting any variation if it did not settle.

    On a small shared machine (client and server on the same cores) the latency
    sometimes does not settle within the stability threshold; a number marked
    unstable is more useful in a table than a hole.
    """
    try:
        return run_perf_analyzer(url, model, csv_path, concurrency=concurrency, **kwargs)
    except PerfAnalyzerError as exc:
        if not (exc.unstable and relax_if_unstable):
            raise
    log(f"  {model} c={concurrency}: not stable; measuring again without a stability bound")
    # perf_analyzer fails a window whose latency is off the mean of the last three by
    # more than the percentage; at 1000% any three windows pass.
    relaxed = {**kwargs, "stability_pct": 1000.0, "max_trials": 3}
    result = run_perf_analyzer(url, model, csv_path, concurrency=concurrency, **relaxed)
    return dataclasses.replace(result, stable=False)


def measure_logged(
    label: str, url: str, model: str, csv_path: Path, *, concurrency: int, **kwargs: Any
) -> PerfResult:
    """measure, with progress lines naming the run by `label`: one as it starts, one
    with its figures or its failure. Raises PerfAnalyzerError as measure does."""
    log(f"  {label} ...")
    try:
        result = measure(url, model, csv_path, concurrency=concurrency, **kwargs)
    except PerfAnalyzerError as exc:
        log(f"  {label}: failed: {exc}")
        raise
    log(f"  {label}: {result.summary()}")
    return result
