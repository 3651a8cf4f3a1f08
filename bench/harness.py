"""Building blocks for benchmarks: a gateway subprocess and perf_analyzer runs.

The gateway is started through its CLI (`infergate serve --port 0 --port-file F`), as a
user would, and perf_analyzer (Triton's C++ load generator, shipped in the
tritonclient wheel) drives it over gRPC. Nothing here imports tritonclient or
infergate.protocol, so a benchmark may use either.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import io
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

BIN = Path(sys.executable).parent
METRICS_OFF = ("--metrics-port", "0")


def log(message: str) -> None:
    """Progress goes to stderr; stdout is left for the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the gateway ----------------------------------------------------------------


class GatewayError(RuntimeError):
    """The gateway did not start, or died while it was being measured."""


@dataclass
class Gateway:
    """A running `infergate serve` subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    command: list[str]

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the gateway process has used so far; None off Linux.

        Per request, it is a cost that a busy machine disturbs far less than throughput.
        """
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise GatewayError(f"gateway exited with {code}:\n{self.log_tail()}")


def gateway_command() -> list[str]:
    script = BIN / "infergate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "infergate.cli"]


@contextmanager
def gateway(
    repository: Path,
    log_path: Path,
    *,
    serve_args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    ready_timeout_s: float = 120.0,
    grace_s: float = 5.0,
) -> Iterator[Gateway]:
    """Start `infergate serve` on a free port; stop it with SIGINT on the way out.

    `env` changes the gateway's environment (this process's, by default): a str sets
    a variable, None removes it (the OTEL_* variables that turn tracing on, say).
    Prometheus metrics are off (`--metrics-port 0`) unless serve_args name a port,
    so that gateways never fight over the default one.

    The gateway is stopped however the block ends, Ctrl-C included; if it ignores
    SIGINT for `grace_s` + 10 s it is killed.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port_file = log_path.with_suffix(".port")
    port_file.unlink(missing_ok=True)
    command = [
        *gateway_command(),
        "serve",
        "--model-repository",
        str(repository),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--shutdown-grace-s",
        str(grace_s),
        *([] if any(a.startswith("--metrics-port") for a in serve_args) else METRICS_OFF),
        *serve_args,
    ]
    environ = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    shown = " ".join(f"{k}={v}" for k, v in (env or {}).items() if v is not None)
    log(f"starting gateway: {shown + ' ' if shown else ''}{shlex.join(command)}")
    with log_path.open("wb") as log_file:
        # A process group of its own: a terminal's Ctrl-C reaches only this process,
        # which then stops the gateway with one SIGINT (a second one, arriving while
        # it shuts down, would end it with 130 instead of 0).
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, process_group=0, env=environ
        )
    gw = Gateway(process=process, port=0, log_path=log_path, command=command)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not port_file.exists():
            gw.check_alive()
            if time.monotonic() > deadline:
                raise GatewayError(
                    f"gateway not ready after {ready_timeout_s:.0f}s:\n{gw.log_tail()}"
                )
            time.sleep(0.05)
        gw.port = int(port_file.read_text())
        log(f"gateway ready on {gw.url}")
        yield gw
    finally:
        _stop(process, grace_s)
        port_file.unlink(missing_ok=True)
        log(f"gateway stopped (exit code {process.returncode})")


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace_s + 10)
    except subprocess.TimeoutExpired:
        log("gateway ignored SIGINT; killing it")
        process.kill()
        process.wait()


def start_gateways(
    stack: ExitStack,
    repository: Path,
    environments: Mapping[str, Mapping[str, str | None]],
    log_path: Callable[[str], Path],
    *,
    serve_args: Sequence[str] = (),
) -> dict[str, Gateway]:
    """One gateway per mode, each with its environment (see gateway's `env`), all on
    one repository; each is stopped when `stack` closes. Benches that compare modes
    start them afresh every round: a gateway process keeps a speed of its own for
    its life, so one process per mode for a whole run reads that luck as a cost."""
    return {
        mode: stack.enter_context(
            gateway(repository, log_path(mode), serve_args=serve_args, env=env)
        )
        for mode, env in environments.items()
    }


T = TypeVar("T")


def in_turn(items: Sequence[T], round_index: int) -> Sequence[T]:
    """The order to measure in: reversed every other round, so that drift within a
    round favours no mode."""
    return items if round_index % 2 == 0 else items[::-1]


# ---- perf_analyzer --------------------------------------------------------------


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
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    if len(rows) != 1:
        raise PerfAnalyzerError(f"expected one row in {csv_path}, found {len(rows)}")
    row = rows[0]
    avg = _AVG_LATENCY.search(proc.stdout)
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


# ---- the machine ------------------------------------------------------------------


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gpus() -> list[str]:
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def _perf_analyzer_version() -> str | None:
    try:
        proc = subprocess.run(
            [str(perf_analyzer_path()), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            env=perf_analyzer_env(),
        )
    except (OSError, subprocess.TimeoutExpired, PerfAnalyzerError):
        return None
    match = re.search(r"Version\s+(\S+)", proc.stdout + proc.stderr)
    return match.group(1) if match else None


def _git_commit(root: Path) -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def machine_info(root: Path) -> dict[str, Any]:
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": platform.node(),
        "nproc": len(affinity) if affinity is not None else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "gpus": _gpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": _package_version("onnxruntime-gpu", "onnxruntime"),
        "infergate": _package_version("infergate"),
        "grpcio": _package_version("grpcio"),
        "perf_analyzer": _perf_analyzer_version(),
        "git_commit": _git_commit(root),
    }
