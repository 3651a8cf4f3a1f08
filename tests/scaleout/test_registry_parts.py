"""The registry's parts on their own: the leased lock against a real redis-server, the
replica reports and the judgement of a wait, the repository's digest and the
recovery that leaves other replicas' writes alone."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infergate.gateway.core.redis_link import RedisLink, RedisOptions
from infergate.gateway.core.redis_lock import LockBusy, RedisLock
from infergate.gateway.core.registry_events import Event, decode, position_key
from infergate.gateway.core.replica_state import (
    ABSENT,
    Expectation,
    ModelReport,
    ReplicaReport,
    judge,
    model_across,
)
from infergate.gateway.core.repository_state import read_model, recover_shared
from tests.scaleout.conftest import RedisProcess
from tests.scaleout.replicas import shared_repository


@pytest.fixture
async def link(redis_server: RedisProcess) -> AsyncIterator[RedisLink]:
    link = RedisLink(RedisOptions(redis_server.url, timeout_s=1.0, connect_timeout_s=1.0))
    try:
        yield link
    finally:
        await link.aclose()


async def test_one_holder_at_a_time_and_only_the_holder_lets_go(link: RedisLink) -> None:
    locks = RedisLock(link, lease_s=5.0, poll_s=0.01)
    first = await locks.try_acquire("t:lock", "replica-a")
    assert first is not None
    assert await locks.try_acquire("t:lock", "replica-b") is None
    assert await locks.holder("t:lock") == "replica-a"
    with pytest.raises(LockBusy) as busy:
        await locks.acquire("t:lock", "replica-b", wait_s=0.1)
    assert busy.value.holder == "replica-a" and busy.value.waited_s >= 0.1
    # A lease that is not yours (a token of another time) releases nothing.
    stale = type(first)(first.key, "replica-a not-the-token")
    assert not await locks.release(stale)
    assert await locks.holder("t:lock") == "replica-a"
    waiter = asyncio.create_task(locks.acquire("t:lock", "replica-b", wait_s=5.0))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    assert await locks.release(first)
    second = await waiter
    assert await locks.holder("t:lock") == "replica-b"
    assert await locks.release(second)
    assert await locks.holder("t:lock") == ""


async def test_a_held_lock_is_renewed_and_a_dead_holders_lock_expires(
    link: RedisLink, redis_server: RedisProcess
) -> None:
    # Renewed every 0.2 s: a loop stalled for 0.4 s on a busy machine still keeps it.
    locks = RedisLock(link, lease_s=0.6, poll_s=0.01)
    async with locks.hold("t:renewed", "replica-a", wait_s=1.0) as lease:
        await asyncio.sleep(1.5)  # well past one lease: the renewals keep it
        assert await locks.holder("t:renewed") == "replica-a"
        assert lease.renewals >= 2 and not lease.lost
    assert await locks.holder("t:renewed") == ""
    locks = RedisLock(link, lease_s=0.3, poll_s=0.01)
    # A holder that never renews (it died): the lock frees itself after the lease.
    assert await locks.try_acquire("t:dead", "replica-dead") is not None
    started = time.monotonic()
    await locks.acquire("t:dead", "replica-b", wait_s=2.0)
    assert 0.1 < time.monotonic() - started < 1.5
    # Taken over behind a holder's back: its renewal notices.
    lease = await locks.acquire("t:stolen", "replica-a", wait_s=1.0)
    redis_server.client().set("t:stolen", "replica-x other")
    assert not await locks.renew(lease) and lease.lost
    assert await locks.holder("t:stolen") == "replica-x"


def test_reports_round_trip_and_refuse_what_they_cannot_read() -> None:
    report = ReplicaReport(
        "replica-a", "17-2", {"digits": ModelReport("READY", ("1", "2"), "", "d1")}
    )
    assert ReplicaReport.from_json(report.to_json()) == report
    for bad in ("", "[]", "{}", '{"format": 99}', '{"format": 1, "models": 3}', "\xff"):
        assert ReplicaReport.from_json(bad) is None
    assert report.model("other").state == ABSENT


def test_events_decode_and_positions_sort() -> None:
    event = Event("replica-a", "digits", "registered", "3", "d1")
    fields = {k.encode(): v.encode() for k, v in event.fields().items()}
    decoded = decode(b"5-1", fields)
    assert decoded is not None and decoded.id == "5-1" and decoded.version == "3"
    assert decode("5-2", {"model": "x", "action": "exploded", "replica": "r"}) is None
    assert decode("5-3", {"model": "x"}) is None
    assert position_key("10-0") > position_key("9-99") > position_key("9-1") > position_key("")


def test_a_wait_is_judged_by_position_then_state() -> None:
    expect = Expectation("m", "10-0", "registered", "2")
    reports = [
        ReplicaReport("a", "10-0", {"m": ModelReport("READY", ("2",), "", "d")}),
        ReplicaReport("b", "9-5", {"m": ModelReport("READY", ("1",), "", "c")}),
        ReplicaReport("c", "", {}),
        ReplicaReport("d", "11-0", {"m": ModelReport("UNAVAILABLE", (), "bad file", "d")}),
        ReplicaReport("e", "11-0", {"m": ModelReport("READY", ("1",), "", "c")}),
        ReplicaReport("f", "11-0", {"m": ModelReport("LOADING", (), "", "")}),
    ]
    verdict = judge(reports, expect)
    assert verdict.done == ("a",)
    assert [r for r, _ in verdict.behind] == ["b", "c", "f"]
    assert [r for r, _ in verdict.failed] == ["d", "e"]
    assert "bad file" in dict(verdict.failed)["d"]
    assert not verdict.settled
    gone = Expectation("m", "10-0", "unregistered")
    verdict = judge([reports[0], ReplicaReport("g", "10-0", {})], gone)
    assert verdict.done == ("g",) and [r for r, _ in verdict.failed] == ["a"]
    rows = model_across(reports[:2], "m", "d", should_serve=True)
    assert [(r.replica, r.in_step) for r in rows] == [("a", True), ("b", False)]


def test_the_digest_follows_config_versions_and_files(tmp_path: Path) -> None:
    repo = shared_repository(tmp_path)
    first = read_model(repo, "digits")
    assert first.present and first.versions == ("1",) and first.config is not None
    assert read_model(repo, "digits").digest == first.digest
    (repo / "digits" / "2").mkdir()
    (repo / "digits" / "2" / "model.onnx").write_bytes(b"x")
    second = read_model(repo, "digits")
    assert second.digest != first.digest and second.versions == ("1", "2")
    # Same name, size and version, written again: other bytes, another digest.
    (repo / "digits" / "2" / "model.onnx").write_bytes(b"y")
    os.utime(repo / "digits" / "2" / "model.onnx", ns=(1, 1))
    assert read_model(repo, "digits").digest != second.digest
    config = repo / "digits" / "config.pbtxt"
    config.write_text(config.read_text() + "\n# a comment\n")
    assert read_model(repo, "digits").digest not in (first.digest, second.digest)
    absent = read_model(repo, "nothing")
    assert not absent.present and absent.digest and absent.digest != first.digest
    assert not read_model(repo, "../digits").present


def test_recovery_leaves_what_other_replicas_may_be_writing(tmp_path: Path) -> None:
    repo = shared_repository(tmp_path)
    staging = repo / ".staging"
    fresh, stale = staging / "upload-fresh", staging / "upload-stale"
    for folder in (fresh, stale):
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"x")
    old = time.time() - 7200
    for path in (stale, stale / "model.onnx"):
        os.utime(path, (old, old))
    model = repo / "digits"
    (model / ".pending-2.pbtxt").write_text("name: 'digits'")  # a commit in progress
    (model / ".pending-9.pbtxt").write_text("name: 'digits'")
    os.utime(model / ".pending-9.pbtxt", (old, old))  # a crash's leftover, no folder
    (model / ".tmp-abc").write_text("x")
    os.utime(model / ".tmp-abc", (old, old))
    done = recover_shared(repo)
    assert len(done) == 3, done
    assert fresh.is_dir() and not stale.exists()
    assert (model / ".pending-2.pbtxt").exists()
    assert not (model / ".pending-9.pbtxt").exists() and not (model / ".tmp-abc").exists()
