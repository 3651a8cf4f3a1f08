"""Settings the gateway chooses from the machine when left at 0 (automatic).

Each choice comes with the reason, for the log line at start-up: a default that an
operator cannot see is one nobody can question.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from infergate.settings import Settings, SettingsError

# The front end (gRPC's poller, the event loop decoding, batching and answering)
# needs about a core of its own at full load: a runtime whose idle threads spin
# (OpenVINO, TFLite) gets one core less than the machine has. onnxruntime's idle
# threads sleep (spinning is turned off), and with one batch in flight its calls
# mostly alternate with the front end's work, so it gets every core: measured on
# 2 cores, cnn64 +7-20% and mlp_large +19% over one thread, mlp_small (on the
# event loop) within the spread; OpenVINO on 2 threads lost 4-8%
# (docs/performance.md).
FRONT_END_CORES = 1


@dataclass(frozen=True)
class Tuned:
    intra_op_threads: int  # 0: the runtime's own default
    sleeping_intra_op_threads: int  # the same, for a runtime whose idle threads sleep
    reason: str


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def intra_op_threads(settings: Settings, cores: int | None = None) -> Tuned:
    """How many threads one runtime call may use."""
    chosen = settings.intra_op_threads
    if chosen > 0:
        return Tuned(chosen, chosen, "--intra-op-threads")
    if chosen == -1:
        return Tuned(0, 0, "--intra-op-threads -1: each runtime's own default")
    if chosen < -1:
        raise SettingsError(
            f"intra_op_threads must be a count, 0 (automatic) or -1 (the runtime's "
            f"default), not {chosen}"
        )
    cores = usable_cores() if cores is None else cores
    threads = max(1, cores - FRONT_END_CORES)
    return Tuned(
        threads,
        cores,
        f"automatic: {cores} usable core(s); onnxruntime, whose idle threads sleep, uses "
        f"them all; runtimes whose threads spin use {threads}, keeping "
        f"{FRONT_END_CORES} for the gRPC front end",
    )


def inflight_reason(settings: Settings) -> str:
    """Why a model without instance groups runs --max-inflight-batches batches at once."""
    count = settings.max_inflight_batches
    if count == 1:
        # Measured by `python -m bench.batching --sweep` (docs/benchmark-results.md).
        return (
            "--max-inflight-batches 1, the default: while one batch runs, the next "
            "requests gather into a bigger one"
        )
    return f"--max-inflight-batches {count}"
