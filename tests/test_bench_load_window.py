"""bench.load_window: CPU time grouped by thread, per request, inside the window."""

from __future__ import annotations

import os
import threading

import pytest

from bench.load_window import (
    EVENT_LOOP,
    Window,
    busy_by_group,
    main,
    measure_window,
    thread_times,
)
from tests.conftest import DEMO_REPOSITORY as REPOSITORY


def test_groups_and_arithmetic() -> None:
    before = {(10, EVENT_LOOP): 1_000, (11, "infergate"): 0, (12, "infergate"): 500}
    after = {
        (10, EVENT_LOOP): 501_000,
        (11, "infergate"): 200_000,
        (12, "infergate"): 100_500,
        (13, "event_engine"): 50_000,  # born inside the window: counted from zero
    }
    busy = busy_by_group(before, after)
    assert busy == {EVENT_LOOP: 500_000, "infergate": 300_000, "event_engine": 50_000}
    lines = Window(seconds=0.01, requests=10, busy_ns=busy, idle_fraction=0.25).lines()
    assert lines[0] == "1,000 requests/s in the window; machine idle 25.0%"
    assert any(
        line.split()[:2] == ["event", "loop"] and "50.0 us per request" in line for line in lines
    )
    assert "85.0 us per request" in lines[-1]  # 850,000 ns over 10 requests


def test_this_process_threads_land_in_their_groups() -> None:
    # This process stands in for the gateway: its main thread is the "event loop";
    # a thread burning CPU inside the window shows under the process's name.
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            pass

    worker = threading.Thread(target=burn)
    answered = iter(range(0, 1000, 100))
    worker.start()
    try:
        window = measure_window(os.getpid(), lambda: next(answered), 0.3, settle_s=0.0)
    finally:
        stop.set()
        worker.join()
    assert window.requests == 100
    assert EVENT_LOOP in window.busy_ns
    assert {group for _, group in thread_times(os.getpid())} >= {EVENT_LOOP}
    others = sum(ns for group, ns in window.busy_ns.items() if group != EVENT_LOOP)
    assert others >= 0.1e9  # the burner ran a good part of the 0.3 s window
    assert 0.0 <= window.idle_fraction <= 1.0
    assert window.seconds >= 0.3


def test_a_real_gateway_under_perf_analyzer(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--model", "mlp_small", "--window-s", "1", "--repository", str(REPOSITORY)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("mlp_small, concurrency 16\n")
    rate = int(out.splitlines()[1].split(" requests/s")[0].replace(",", ""))
    assert rate > 100
    assert "event loop" in out and "us per request" in out
