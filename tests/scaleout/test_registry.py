"""The registry every replica follows (core/replica_registry.py), with gateways in this
process on one repository folder and a real redis-server: a change on one replica is
applied by the others; --wait-replicas; per-replica state; a replica that missed
events converges from the repository; the change lock."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import text_format

from infergate import cli
from infergate.clients import AdminError, batching
from infergate.clients.admin_client import AsyncAdminClient
from infergate.gateway.core.registry_events import REPLICAS, STREAM, lock_key, replica_key
from infergate.gateway.core.replica_state import ReplicaReport
from infergate.gateway.server import GatewayServer
from infergate.settings import Settings, SettingsError
from tests.scaleout.conftest import RedisProcess
from tests.scaleout.replicas import (
    DIGITS_ONNX,
    PROPAGATION_BOUND_S,
    digits_config,
    eventually,
    infer,
    ready,
    register_digits,
    served_max_batch_size,
    shared_repository,
    start_replica,
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return shared_repository(tmp_path)


@pytest.fixture
async def pair(repo: Path, redis_server: RedisProcess) -> AsyncIterator[list[GatewayServer]]:
    servers = [await start_replica(repo, redis_server.url, "replica-a")]
    try:
        servers.append(await start_replica(repo, redis_server.url, "replica-b"))
        yield servers
    finally:
        for server in reversed(servers):
            await server.stop()


async def test_a_model_registered_on_one_replica_is_served_by_the_other(
    pair: list[GatewayServer],
) -> None:
    a, b = pair
    started = time.monotonic()
    response = await register_digits(a.address, "digits2", wait_replicas_s=PROPAGATION_BOUND_S)
    took = time.monotonic() - started
    assert response.version == "1"
    assert [(r.replica, r.state, list(r.versions), r.in_step) for r in response.replicas] == [
        ("replica-a", "READY", ["1"], True),
        ("replica-b", "READY", ["1"], True),
    ]
    assert await ready(b.address, "digits2", "1")
    x = np.random.default_rng(1).random((1, 64), dtype=np.float32)
    assert len((await infer(b.address, "digits2", x)).raw_output_contents) == 1
    assert took < PROPAGATION_BOUND_S

    # A new version, without waiting: B follows within the bound.
    await register_digits(a.address, "digits2")
    seconds = await eventually(
        lambda: ready(b.address, "digits2", "2"), "B serves digits2 version 2"
    )
    assert seconds < PROPAGATION_BOUND_S
    assert not await ready(b.address, "digits2", "1")  # the policy serves the newest only
    assert b.registry is not None and b.registry.events_applied >= 2


async def test_a_live_update_and_an_unregistration_reach_the_other_replica(
    pair: list[GatewayServer],
) -> None:
    a, b = pair
    before = a.lifecycle.registry.get("digits")
    async with AsyncAdminClient(b.address) as admin:
        config = await admin.update(
            "digits", batching(max_batch_size=16, max_queue_delay_us=500), wait_replicas_s=10
        )
    assert config.max_batch_size == 16
    assert await served_max_batch_size(a.address, "digits") == 16
    model = a.lifecycle.registry.get("digits")
    assert model.config.dynamic_batching.max_queue_delay_microseconds == 500
    assert model is before  # a live change: the loaded model reconfigured, not reloaded

    async with AsyncAdminClient(b.address) as admin:
        response = await admin.unregister("digits", wait_replicas_s=10)
    assert response.files_removed
    assert [(r.replica, r.state) for r in response.replicas] == [
        ("replica-a", "ABSENT"),
        ("replica-b", "ABSENT"),
    ]
    assert not await ready(a.address, "digits")


async def test_unloaded_with_files_kept_stays_unloaded_everywhere(
    pair: list[GatewayServer], repo: Path, redis_server: RedisProcess
) -> None:
    a, b = pair
    async with AsyncAdminClient(a.address) as admin:
        response = await admin.unregister("digits", keep_files=True, wait_replicas_s=10)
    assert not response.files_removed and (repo / "digits").is_dir()
    assert not await ready(b.address, "digits")
    assert b.registry is not None
    await b.registry.resync()  # the repository still has it: a resync must not load it
    assert not await ready(b.address, "digits")
    # A replica started now loads the repository, then follows the registry: unloaded.
    c = await start_replica(repo, redis_server.url, "replica-c")
    try:
        await eventually(
            lambda: _not(ready(c.address, "digits")), "C unloads what the others unloaded"
        )
        # Loading it again (Triton's RepositoryModelLoad, no files) brings it back everywhere.
        await a.admin.reload("digits")
        for server in (a, b, c):
            await eventually(lambda s=server: ready(s.address, "digits"), "digits back")
    finally:
        await c.stop()


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def test_a_replica_started_later_catches_up(
    pair: list[GatewayServer], repo: Path, redis_server: RedisProcess
) -> None:
    a, _ = pair
    await register_digits(a.address, "late", wait_replicas_s=10)
    c = await start_replica(repo, redis_server.url, "replica-c")
    try:
        assert await ready(c.address, "late")
        await register_digits(a.address, "late", wait_replicas_s=10)  # C is counted now
        assert await ready(c.address, "late", "2")
    finally:
        await c.stop()


async def test_list_and_describe_show_every_replica(pair: list[GatewayServer]) -> None:
    a, b = pair
    await register_digits(a.address, "digits2", wait_replicas_s=10)
    async with AsyncAdminClient(b.address) as admin:
        models = {m.name: m for m in await admin.list_models()}
        described = await admin.describe("digits2")
    rows = [(r.replica, r.state, list(r.versions), r.in_step) for r in described.replicas]
    assert rows == [
        ("replica-a", "READY", ["1"], True),
        ("replica-b", "READY", ["1"], True),
    ]
    assert {r.replica for r in models["digits"].replicas} == {"replica-a", "replica-b"}
    assert all(r.state == "READY" and r.position for r in models["digits2"].replicas)


async def test_a_replica_that_missed_changes_converges_from_the_repository(
    repo: Path, redis_server: RedisProcess
) -> None:
    a = await start_replica(repo, redis_server.url, "replica-a", registry_resync_s=0.5)
    try:
        # A change nobody announced (copied in by hand): found by the periodic resync.
        shutil.copytree(repo / "digits", repo / "copied")
        (repo / "copied" / "config.pbtxt").write_text(
            (repo / "copied" / "config.pbtxt").read_text().replace('"digits"', '"copied"')
        )
        await eventually(lambda: ready(a.address, "copied"), "the resync finds it", 5)

        # Redis away: changes are refused (never uncoordinated), serving goes on.
        redis_server.stop()
        with pytest.raises(AdminError) as refused:
            await register_digits(a.address, "while-away")
        assert refused.value.code is grpc.StatusCode.UNAVAILABLE
        assert "coordinated" in refused.value.message
        shutil.rmtree(repo / "copied")  # removed behind its back meanwhile
        x = np.random.default_rng(2).random((1, 64), dtype=np.float32)
        assert len((await infer(a.address, "digits", x)).raw_output_contents) == 1
        redis_server.start()  # back, empty: the follower resyncs
        await eventually(lambda: _not(ready(a.address, "copied")), "it catches up", 10)
        response = await register_digits(a.address, "after", wait_replicas_s=10)
        assert [r.state for r in response.replicas] == ["READY"]
    finally:
        await a.stop()


async def test_two_replicas_registering_one_name_at_once(
    repo: Path, redis_server: RedisProcess
) -> None:
    a = await start_replica(repo, redis_server.url, "replica-a")
    b = await start_replica(repo, redis_server.url, "replica-b")
    try:
        results = await asyncio.gather(
            register_digits(a.address, "contested", version="1", max_batch_size=8),
            register_digits(b.address, "contested", version="1", max_batch_size=16),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], AdminError)
        assert lost[0].code is grpc.StatusCode.ALREADY_EXISTS
        winner = 8 if results[0] is won[0] else 16
        text = (repo / "contested" / "config.pbtxt").read_text()
        assert f"max_batch_size: {winner}\n" in text
        assert sorted(p.name for p in (repo / "contested").iterdir()) == ["1", "config.pbtxt"]
        for server in (a, b):
            await eventually(
                lambda s=server: _equals(served_max_batch_size(s.address, "contested"), winner),
                "both serve the winner's version",
            )
    finally:
        await b.stop()
        await a.stop()
    # Restarted, both serve the winner's version from the repository.
    a = await start_replica(repo, redis_server.url, "replica-a")
    b = await start_replica(repo, redis_server.url, "replica-b")
    try:
        for server in (a, b):
            assert await served_max_batch_size(server.address, "contested") == winner
    finally:
        await b.stop()
        await a.stop()


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_a_change_waits_for_another_replicas_lock(
    pair: list[GatewayServer], redis_server: RedisProcess
) -> None:
    a, _ = pair
    client = redis_server.client()
    client.set(lock_key("digits2"), "replica-x token", px=600)  # another replica's change
    started = time.monotonic()
    await register_digits(a.address, "digits2")
    assert time.monotonic() - started >= 0.4  # it waited for the lease to run out
    client.set(lock_key("digits2"), "replica-x token", px=60_000)
    assert a.registry is not None
    a.registry.options = dataclasses.replace(a.registry.options, lock_wait_s=0.3)
    with pytest.raises(AdminError) as busy:
        await register_digits(a.address, "digits2")
    assert busy.value.code is grpc.StatusCode.UNAVAILABLE
    assert "being changed by replica 'replica-x'" in busy.value.message


async def test_waiting_names_the_replicas_behind(
    pair: list[GatewayServer], redis_server: RedisProcess
) -> None:
    a, _ = pair
    # A live replica that never follows: its report stays at the start of the stream.
    stuck = ReplicaReport("replica-stuck", "0-1", {})
    client = redis_server.client()
    client.set(replica_key("replica-stuck"), stuck.to_json(), px=60_000)
    client.sadd(REPLICAS, "replica-stuck")
    with pytest.raises(AdminError) as late:
        await register_digits(a.address, "digits2", wait_replicas_s=0.5)
    assert late.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "'replica-stuck': not at the change yet" in late.value.message
    assert "replica-a" not in late.value.message  # the real replicas applied it
    assert await ready(a.address, "digits2")  # the change itself is made
    assert client.xlen(STREAM) >= 1


async def test_waiting_without_a_registry_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    repo = shared_repository(tmp_path)
    server = GatewayServer(
        Settings(model_repository=repo, port=0, metrics_port=0, insecure_admin=True)
    )
    await server.start()
    try:
        with pytest.raises(AdminError) as refused:
            await register_digits(server.address, "digits2", wait_replicas_s=5)
        assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert not (repo / "digits2").exists()
        async with AsyncAdminClient(server.address) as admin:
            (summary,) = [m for m in await admin.list_models() if m.name == "digits"]
        assert not summary.replicas
    finally:
        await server.stop()


def test_registry_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="model_repository"):
        GatewayServer(Settings(metrics_port=0, registry_redis_url="redis://127.0.0.1:1"))
    repo = shared_repository(tmp_path)
    with pytest.raises(SettingsError, match="replica_id"):
        GatewayServer(
            Settings(
                metrics_port=0,
                model_repository=repo,
                registry_redis_url="redis://127.0.0.1:1",
                replica_id="has spaces",
            )
        )
    with pytest.raises(SettingsError, match="registry_redis_url"):
        GatewayServer(
            Settings(metrics_port=0, model_repository=repo, registry_redis_url="http://x:1")
        )


async def test_a_change_made_while_behind_ends_in_the_whole_state(
    pair: list[GatewayServer], repo: Path
) -> None:
    a, _ = pair
    async with AsyncAdminClient(a.address) as admin:
        config = digits_config("two", 64)
        config.version_policy.latest.num_versions = 2
        await admin.register("two", {"model.onnx": DIGITS_ONNX}, config, wait_replicas_s=10)
    # Version 2 appears without an event (as if its announcement were lost): A is behind.
    shutil.copytree(repo / "two" / "1", repo / "two" / ".2-tmp")
    (repo / "two" / ".2-tmp").rename(repo / "two" / "2")
    async with AsyncAdminClient(a.address) as admin:  # version 3, made on A, same config
        response = await admin.register("two", {"model.onnx": DIGITS_ONNX})
    assert response.version == "3"
    # A serves what the repository says (the newest 2: 2 and 3), not 1 and 3.
    await eventually(lambda: ready(a.address, "two", "2"), "A catches up with version 2")
    assert sorted(a.lifecycle.registry.entry("two").versions) == ["2", "3"]


async def test_the_cli_waits_for_the_replicas(
    pair: list[GatewayServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = pair
    config = tmp_path / "config.pbtxt"
    config.write_text(text_format.MessageToString(digits_config("viacli")))
    url = ("--url", a.address)

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(cli.main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await run(
        "models", "register", "viacli", "--onnx", str(DIGITS_ONNX), "--config", str(config),
        "--no-progress", "--wait-replicas", *url,
    )  # fmt: skip
    assert code == 0, err
    assert "on 2 replicas: replica-a READY (1), replica-b READY (1)" in out
    assert await ready(b.address, "viacli")
    code, out, err = await run(
        "models", "update", "viacli", "--cache-ttl-ms", "5", "--wait-replicas", "10", *url
    )
    assert code == 0, err
    assert "every live replica applied it" in out
    assert b.lifecycle.registry.get("viacli").config.response_cache_ttl_ms == 5
    code, out, err = await run("models", "unregister", "viacli", "--wait-replicas", "10", *url)
    assert code == 0, err
    assert "replica-a ABSENT, replica-b ABSENT" in out
