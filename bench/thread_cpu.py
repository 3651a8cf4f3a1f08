"""Where tracing's cost goes: CPU per request, thread by thread, tracing off vs on.

    python -m bench.thread_cpu --repository models/repository [--rounds 3]

The tracing section of `make bench` gives the throughput cost; on this shared
machine one run of it is good to a few points. CPU time per request, read from
/proc for each thread, moves much less between runs and says which part pays:
the gateway's event loop (its main thread), its other threads, the export process
and the OTLP receiver. Each round starts a gateway with tracing off and one with
tracing on (100% sampled, exporting to bench.otlp_sink), drives each with
perf_analyzer in turn (the order reversed every round) and prints every round and
the medians. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from bench import harness
from bench.batching import SERVE_ARGS
from bench.repository import Twin, make_repository
from bench.statistics import read_counts
from bench.tracing import TRACING_OFF, receiver_process, tracing_on

EVENT_LOOP = "gateway event loop"
OTHER_THREADS = "gateway, other threads"
EXPORTER = "export process"
RECEIVER = "OTLP receiver"
GROUPS = (EVENT_LOOP, OTHER_THREADS, EXPORTER, RECEIVER)
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(stat: str) -> int:
    # Fields after the ")" that closes the command name: utime is the 12th, stime 13th.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _thread_ticks(pid: int) -> dict[int, int]:
    ticks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            ticks[int(tid)] = _cpu_ticks(Path(f"/proc/{pid}/task/{tid}/stat").read_text())
    return ticks


def snapshot(gateway_pid: int, receiver_pid: int) -> dict[str, int]:
    """CPU ticks so far by group (threads that end between snapshots are not counted)."""
    groups: dict[str, int] = defaultdict(int)
    for tid, ticks in _thread_ticks(gateway_pid).items():
        groups[EVENT_LOOP if tid == gateway_pid else OTHER_THREADS] += ticks
    for child in _children(gateway_pid):
        with contextlib.suppress(OSError):
            groups[EXPORTER] += sum(_thread_ticks(child).values())
    groups[RECEIVER] += sum(_thread_ticks(receiver_pid).values())
    return groups


def per_request_us(
    before: dict[str, int], after: dict[str, int], requests: int
) -> dict[str, float]:
    return {
        group: (after.get(group, 0) - before.get(group, 0)) / _TICKS_PER_S / requests * 1e6
        for group in GROUPS
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.thread_cpu", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--repository", type=Path, default=Path("models/repository"))
    parser.add_argument("--model", default="digits")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="infergate-thread-cpu-") as tmp:
        workdir = Path(tmp)
        repository = make_repository(
            workdir / "repository", {args.model: Twin(args.model)}, args.repository
        )
        with receiver_process(workdir, "on") as sink:
            modes = {"off": TRACING_OFF, "on": tracing_on(sink.port)}
            for index in range(args.rounds):
                with contextlib.ExitStack() as stack:
                    gateways = {
                        mode: stack.enter_context(
                            harness.gateway(
                                repository,
                                workdir / f"{mode}.log",
                                serve_args=SERVE_ARGS,
                                env=env,
                            )
                        )
                        for mode, env in modes.items()
                    }
                    order = ("off", "on") if index % 2 == 0 else ("on", "off")
                    for mode in order:
                        gw = gateways[mode]
                        served = read_counts(gw.url, args.model).success_count
                        before = snapshot(gw.process.pid, sink.pid)
                        result = harness.measure(
                            gw.url,
                            args.model,
                            workdir / "perf.csv",
                            concurrency=args.concurrency,
                        )
                        after = snapshot(gw.process.pid, sink.pid)
                        served = read_counts(gw.url, args.model).success_count - served
                        row = per_request_us(before, after, served)
                        row["infer/s"] = result.throughput
                        results[mode].append(row)
                        print(_line(f"round {index + 1} {mode}", row), flush=True)
    print(f"\nmedians over {args.rounds} rounds, CPU us per request:")
    medians = {
        mode: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for mode, rows in results.items()
    }
    for mode, row in medians.items():
        print(_line(mode, row))
    delta = {key: medians["on"][key] - medians["off"][key] for key in GROUPS}
    print(
        _line(
            "on - off", {**delta, "infer/s": medians["on"]["infer/s"] - medians["off"]["infer/s"]}
        )
    )
    return 0


def _line(label: str, row: dict[str, float]) -> str:
    parts = [f"{group} {row[group]:6.1f}" for group in GROUPS]
    return f"{label:>14}: " + ", ".join(parts) + f"; {row['infer/s']:,.0f} infer/s"


if __name__ == "__main__":
    raise SystemExit(main())
