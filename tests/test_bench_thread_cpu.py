"""bench.thread_cpu puts CPU time where it was spent: main thread, other threads,
child processes (the export process) and a separate process (the receiver)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from bench.thread_cpu import EVENT_LOOP, EXPORTER, OTHER_THREADS, RECEIVER, snapshot

BURN_S = 0.4
# At least half of a burn must show, in ns.
AT_LEAST_NS = int(BURN_S / 2 * 1e9)

# Burns BURN_S of CPU, says so, then stays alive (a process or thread that has
# ended is no longer in /proc) until its stdin closes.
BURNER = (
    "import sys, time\n"
    f"end = time.process_time() + {BURN_S}\n"
    "while time.process_time() < end: pass\n"
    "print('burned', flush=True)\n"
    "sys.stdin.read()\n"
)


def _burn() -> None:
    end = time.thread_time() + BURN_S
    while time.thread_time() < end:
        pass


def _start(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_cpu_lands_in_the_group_that_spent_it() -> None:
    receiver = _start("import sys; print('up', flush=True); sys.stdin.read()")
    release = threading.Event()

    def worker_burn() -> None:
        _burn()
        burned.set()
        release.wait(30)

    burned = threading.Event()
    worker = threading.Thread(target=worker_burn)
    child: subprocess.Popen[str] | None = None
    try:
        assert receiver.stdout is not None and receiver.stdout.readline() == "up\n"
        before = snapshot(os.getpid(), receiver.pid)
        _burn()  # this thread stands for the event loop: the process's main thread
        worker.start()
        assert burned.wait(30)
        child = _start(BURNER)  # the export process: a child of the gateway
        assert child.stdout is not None and child.stdout.readline() == "burned\n"
        after = snapshot(os.getpid(), receiver.pid)
    finally:
        release.set()
        if worker.is_alive():
            worker.join(30)
        for process in (receiver, child):
            if process is not None:
                process.kill()
                process.wait()
    assert after[EVENT_LOOP] - before[EVENT_LOOP] >= AT_LEAST_NS
    assert after[OTHER_THREADS] - before[OTHER_THREADS] >= AT_LEAST_NS
    assert after[EXPORTER] - before.get(EXPORTER, 0) >= AT_LEAST_NS
    assert after[RECEIVER] - before[RECEIVER] < AT_LEAST_NS  # it only waited
