"""CPU per thread while the load runs: which part of the gateway is busy, and how much
of the machine is idle, for one of the peer section's models.

    python -m bench.load_window --model cnn64 [--concurrency 16] [--window-s 6]
        [--serve-args "--intra-op-threads 1"]

perf_analyzer drives `infergate serve` (default flags, plus --serve-args) on the
model (bench/peer_models.py: mlp_small, cnn64 or mlp_large, pinned to onnxruntime,
as in the peer section). Measuring over perf_analyzer's whole run, as
bench.thread_cpu does, counts its start and its end, when the load is not there;
this reads every thread's /proc/<pid>/task/<tid>/schedstat, the machine's idle time
(/proc/stat) and the model's answered requests (ModelStatistics) only inside a
window well within the load. That is how docs/performance.md found the event loop
and the runtime taking turns on cnn64 (each about half busy, the machine a third
idle). Threads are grouped by their system name: "event loop" (the main thread),
gRPC's ("event_engine", ...), and the rest under the process's name ("infergate":
the worker threads that run runtime calls and the runtime's own pool threads;
Python does not name its threads for the system). Linux only.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import thread_cpu
from bench.gateway_process import GatewayError, gateway
from bench.model_counts import read_counts
from bench.peer_models import MLP_LARGE, MODELS, infergate_repository, model_files
from bench.perf_analyzer import PerfAnalyzerError, PerfResult, run_perf_analyzer

EVENT_LOOP = "event loop"
# perf_analyzer settles first; the window opens after this and closes before its end.
SETTLE_S = 3.0
START_TIMEOUT_S = 60.0
DEFAULT_CONCURRENCY = {MLP_LARGE.name: 32}  # the peer section's; 16 for the others

ThreadTimes = dict[tuple[int, str], int]  # (tid, group) -> ns on a CPU so far


@dataclass(frozen=True)
class Window:
    seconds: float
    requests: int
    busy_ns: Mapping[str, int]  # per thread group
    idle_fraction: float  # of the whole machine

    def lines(self) -> list[str]:
        rate = self.requests / self.seconds
        out = [f"{rate:,.0f} requests/s in the window; machine idle {self.idle_fraction:.1%}"]
        for group, ns in sorted(self.busy_ns.items(), key=lambda item: -item[1]):
            if ns < self.seconds * 1e6:  # under 0.1% of a core
                continue
            out.append(
                f"  {group:<24} {ns / self.seconds / 1e7:5.1f}% of a core  "
                f"{ns / 1e3 / self.requests:7.1f} us per request"
            )
        total = sum(self.busy_ns.values())
        out.append(
            f"  {'gateway, all threads':<24} {total / self.seconds / 1e7:5.1f}% of a core  "
            f"{total / 1e3 / self.requests:7.1f} us per request"
        )
        return out


def group_of(tid: int, pid: int, name: str) -> str:
    """The group a thread's CPU time is shown under."""
    return EVENT_LOOP if tid == pid else name


def thread_times(pid: int) -> ThreadTimes:
    times: ThreadTimes = {}
    for tid, (run_ns, _) in thread_cpu.thread_times(pid).items():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            times[(tid, group_of(tid, pid, name))] = run_ns
    return times


def machine_jiffies() -> tuple[int, int]:
    """(idle + iowait, all) jiffies so far, from /proc/stat's first line."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[3] + fields[4], sum(fields)


def busy_by_group(before: ThreadTimes, after: ThreadTimes) -> dict[str, int]:
    """CPU ns each group spent between two snapshots (threads born meanwhile count
    from zero; threads that ended meanwhile are not counted)."""
    busy: dict[str, int] = defaultdict(int)
    for key, run_ns in after.items():
        busy[key[1]] += run_ns - before.get(key, 0)
    return dict(busy)


def measure_window(
    pid: int, answered: Callable[[], int], window_s: float, settle_s: float = SETTLE_S
) -> Window:
    """Sleep `settle_s`, then measure `window_s` of the running load."""
    time.sleep(settle_s)
    served, threads, jiffies = answered(), thread_times(pid), machine_jiffies()
    started = time.monotonic()
    time.sleep(window_s)
    served_after, threads_after, jiffies_after = answered(), thread_times(pid), machine_jiffies()
    seconds = time.monotonic() - started
    idle, total = (jiffies_after[0] - jiffies[0]), (jiffies_after[1] - jiffies[1])
    requests = served_after - served
    if requests < 1:
        raise GatewayError("the gateway answered no request in the window")
    return Window(seconds, requests, busy_by_group(threads, threads_after), idle / max(1, total))


def run(
    model: str, concurrency: int, window_s: float, serve_args: Sequence[str], repository: Path
) -> tuple[Window, PerfResult]:
    chosen = [m for m in MODELS if m.name == model]
    with tempfile.TemporaryDirectory(prefix="infergate-load-window-") as tmp:
        workdir = Path(tmp)
        files = model_files(workdir, repository, chosen)
        served = infergate_repository(workdir / "repository", files, chosen)
        with gateway(served, workdir / "gateway.log", serve_args=serve_args) as gw:
            outcome: dict[str, PerfResult | BaseException] = {}

            def load() -> None:
                try:
                    outcome["result"] = run_perf_analyzer(
                        gw.url,
                        model,
                        workdir / "perf.csv",
                        concurrency=concurrency,
                        # Long windows and no early stop: the load outlasts the window.
                        window_ms=int((SETTLE_S + window_s) * 1000 / 2) + 1000,
                        max_trials=3,
                        stability_pct=1000.0,
                    )
                except BaseException as exc:  # reported below, in this thread
                    outcome["error"] = exc

            def answered() -> int:
                return read_counts(gw.url, model).success_count

            loader = threading.Thread(target=load, daemon=True)
            before_load = answered()
            loader.start()
            # The settling time counts from the load's first answer, not from
            # perf_analyzer's start (slow on a cold machine).
            deadline = time.monotonic() + START_TIMEOUT_S
            while answered() == before_load and loader.is_alive():
                if time.monotonic() > deadline:
                    raise GatewayError(f"no answer within {START_TIMEOUT_S:.0f} s of the load")
                time.sleep(0.05)
            if "error" in outcome:  # perf_analyzer failed before the window
                raise outcome["error"]
            window = measure_window(gw.process.pid, answered, window_s)
            loader.join()
    error = outcome.get("error")
    if error is not None:
        raise error
    result = outcome["result"]
    assert isinstance(result, PerfResult)
    return window, result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load_window", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--model", choices=[m.name for m in MODELS], default="cnn64")
    parser.add_argument("--concurrency", type=_at_least_0, default=0, help="0: the peer section's")
    parser.add_argument("--window-s", type=_positive_s, default=6.0)
    parser.add_argument("--serve-args", default="", help="more `infergate serve` flags")
    parser.add_argument("--repository", type=Path, default=Path("models/repository"))
    args = parser.parse_args(argv)
    if not Path("/proc/self/schedstat").exists():
        parser.error("needs Linux's /proc/<pid>/schedstat")
    concurrency = args.concurrency or DEFAULT_CONCURRENCY.get(args.model, 16)
    try:
        window, result = run(
            args.model,
            concurrency,
            args.window_s,
            shlex.split(args.serve_args),
            args.repository,
        )
    except (GatewayError, PerfAnalyzerError, OSError) as exc:
        print(f"bench.load_window: {exc}", file=sys.stderr)
        return 1
    print(f"{args.model}, concurrency {concurrency} {args.serve_args}".rstrip())
    print("\n".join(window.lines()))
    print(
        f"perf_analyzer over its whole run: {result.throughput:,.0f} infer/s, "
        f"p99 {result.p99_us:,.0f} us"
    )
    return 0


def _at_least_0(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"want a count (0: the peer section's), got {text}")
    return value


def _positive_s(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"want seconds above 0, got {text}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
