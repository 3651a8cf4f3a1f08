"""Where tracing's cost goes: CPU per request, thread by thread, tracing off vs on.

    python -m bench.thread_cpu --repository models/repository [--rounds 3]

The tracing section of `make bench` gives the throughput cost; on this shared
machine one run of it is good to a few points. CPU time per request, read for each
thread from /proc/<pid>/task/<tid>/schedstat (nanoseconds; /proc/.../stat counts
10 ms ticks), moves much less between runs and says which part pays: the gateway's
event loop (its main thread), its other threads, the export process and the OTLP
receiver; and how long the event loop, ready to run, waited for a CPU. Each round
starts a gateway with tracing off and one with tracing on (100% sampled, exporting
to bench.otlp_sink), drives each with perf_analyzer in turn (the order reversed
every round) and prints every round and the medians. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from bench.gateway_process import GatewayError, in_turn, start_gateways
from bench.model_counts import read_counts
from bench.perf_analyzer import PerfAnalyzerError, measure
from bench.serve_settings import SERVE_ARGS
from bench.tracing_modes import TRACING_OFF, receiver_process, tracing_on
from bench.twin_repository import RepositoryError, Twin, make_repository

EVENT_LOOP = "gateway event loop"
OTHER_THREADS = "gateway, other threads"
EXPORTER = "export process"
RECEIVER = "OTLP receiver"
EVENT_LOOP_WAIT = "event loop waiting for a CPU"
GROUPS = (EVENT_LOOP, OTHER_THREADS, EXPORTER, RECEIVER, EVENT_LOOP_WAIT)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The parent pid is the second field after the ")" closing the name.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def thread_times(pid: int) -> dict[int, tuple[int, int]]:
    """Per thread: (ns on a CPU, ns runnable but waiting for one), so far."""
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            run_ns, wait_ns, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            times[int(tid)] = (int(run_ns), int(wait_ns))
    return times


def _cpu_ns(pid: int) -> int:
    return sum(run_ns for run_ns, _ in thread_times(pid).values())


def snapshot(gateway_pid: int, receiver_pid: int) -> dict[str, int]:
    """Nanoseconds so far by group (threads that end between snapshots are not counted)."""
    groups: dict[str, int] = defaultdict(int)
    for tid, (run_ns, wait_ns) in thread_times(gateway_pid).items():
        if tid == gateway_pid:
            groups[EVENT_LOOP] += run_ns
            groups[EVENT_LOOP_WAIT] += wait_ns
        else:
            groups[OTHER_THREADS] += run_ns
    for child in _children(gateway_pid):
        with contextlib.suppress(OSError):
            groups[EXPORTER] += _cpu_ns(child)
    groups[RECEIVER] += _cpu_ns(receiver_pid)
    return groups


def per_request_us(
    before: dict[str, int], after: dict[str, int], requests: int
) -> dict[str, float]:
    return {
        group: (after.get(group, 0) - before.get(group, 0)) / requests / 1e3 for group in GROUPS
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.thread_cpu", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--repository", type=Path, default=Path("models/repository"))
    parser.add_argument("--model", default="digits")
    parser.add_argument("--concurrency", type=_positive, default=16)
    parser.add_argument("--rounds", type=_positive, default=3)
    args = parser.parse_args(argv)
    if not Path("/proc/self/schedstat").exists():
        parser.error("needs Linux's /proc/<pid>/schedstat")
    try:
        results = _measure(args.repository, args.model, args.concurrency, args.rounds)
    except (RepositoryError, GatewayError, PerfAnalyzerError) as exc:
        print(f"bench.thread_cpu: {exc}", file=sys.stderr)
        return 1
    _report(results)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"want a positive integer, got {text}")
    return value


def _measure(
    source: Path, model: str, concurrency: int, rounds: int
) -> dict[str, list[dict[str, float]]]:
    """Per mode, one row per round: CPU us per request by group, and infer/s."""
    results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="infergate-thread-cpu-") as tmp:
        workdir = Path(tmp)
        repository = make_repository(workdir / "repository", {model: Twin(model)}, source)
        with receiver_process(workdir, "on") as sink:
            modes = {"off": TRACING_OFF, "on": tracing_on(sink.port)}
            for index in range(rounds):
                with start_gateways(
                    repository, modes, lambda mode: workdir / f"{mode}.log", serve_args=SERVE_ARGS
                ) as gateways:
                    for mode in in_turn(list(gateways), index):
                        gw = gateways[mode]
                        served = read_counts(gw.url, model).success_count
                        before = snapshot(gw.process.pid, sink.pid)
                        result = measure(
                            gw.url, model, workdir / "perf.csv", concurrency=concurrency
                        )
                        after = snapshot(gw.process.pid, sink.pid)
                        served = read_counts(gw.url, model).success_count - served
                        if served < 1:
                            raise GatewayError(f"{mode}: the gateway answered no request")
                        row = per_request_us(before, after, served)
                        row["infer/s"] = result.throughput
                        results[mode].append(row)
                        print(_line(f"round {index + 1} {mode}", row), flush=True)
    return results


def _report(results: dict[str, list[dict[str, float]]]) -> None:
    rounds = len(results["off"])
    print(f"\nmedians over {rounds} rounds, CPU us per request:")
    medians = {
        mode: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for mode, rows in results.items()
    }
    for mode, row in medians.items():
        print(_line(mode, row))
    delta = {key: medians["on"][key] - medians["off"][key] for key in (*GROUPS, "infer/s")}
    print(_line("on - off", delta))


def _line(label: str, row: dict[str, float]) -> str:
    parts = [f"{group} {row[group]:6.1f}" for group in GROUPS]
    return f"{label:>14}: " + ", ".join(parts) + f"; {row['infer/s']:,.0f} infer/s"


if __name__ == "__main__":
    raise SystemExit(main())
