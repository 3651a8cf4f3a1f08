"""Settings the gateway chooses from the machine (infergate/gateway/tuning.py) and the
event loop `serve` runs on."""

from __future__ import annotations

import asyncio

import pytest

from infergate.cli import event_loop_factory
from infergate.gateway import tuning
from infergate.settings import Settings, SettingsError


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_automatic_threads_keep_a_core_for_the_front_end_unless_idle_threads_sleep(
    cores: int, threads: int
) -> None:
    chosen = tuning.intra_op_threads(Settings(), cores=cores)
    assert chosen.intra_op_threads == threads
    assert chosen.sleeping_intra_op_threads == cores
    assert f"{cores} usable core" in chosen.reason


def test_an_explicit_count_or_the_runtimes_default_is_taken_as_given() -> None:
    explicit = tuning.intra_op_threads(Settings(intra_op_threads=3), cores=16)
    assert (explicit.intra_op_threads, explicit.sleeping_intra_op_threads) == (3, 3)
    default = tuning.intra_op_threads(Settings(intra_op_threads=-1), cores=16)
    assert (default.intra_op_threads, default.sleeping_intra_op_threads) == (0, 0)
    with pytest.raises(SettingsError, match="automatic"):
        tuning.intra_op_threads(Settings(intra_op_threads=-2))


def test_usable_cores_follow_the_process_affinity() -> None:
    import os

    assert tuning.usable_cores() == len(os.sched_getaffinity(0))


def test_serve_runs_on_uvloop_unless_asked_for_asyncio() -> None:
    import uvloop

    assert event_loop_factory(Settings()) is uvloop.new_event_loop
    assert event_loop_factory(Settings(event_loop="uvloop")) is uvloop.new_event_loop
    assert event_loop_factory(Settings(event_loop="asyncio")) is None
    loop = uvloop.new_event_loop()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
