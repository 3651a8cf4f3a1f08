"""Changing a serving model's settings live, and removing it while requests wait."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.clients import AsyncClient, InferenceError
from infergate.clients.admin_client import AdminError, AsyncAdminClient, ConfigUpdate, batching
from infergate.gateway.core.repository import parse_config
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.protocol import model_config_pb2 as mc
from tests.admin.conftest import Served
from tests.admin.payloads import fake_model, row
from tests.fake_backend import FakeModel

FAKE_CONFIG = parse_config('backend: "fake" max_batch_size: 8', "fake config")


async def register_fake(
    admin: AsyncAdminClient, tmp_path: Path, name: str, delay_s: float = 0.0
) -> None:
    artifact = fake_model(tmp_path / name / "model.fake", delay_s)
    await admin.register(name, {"model.fake": artifact}, FAKE_CONFIG)


def batch_sizes(served: Served, name: str) -> list[int]:
    """Rows of each batch the model ran for requests (not at load)."""
    runtime = served.server.core.model(name).runtime
    assert isinstance(runtime, FakeModel)
    return [len(b) for b in runtime.batches]


async def model_config(served: Served, name: str) -> mc.ModelConfig:
    """What the inference service's ModelConfig answers (perf_analyzer reads it)."""
    async with grpc.aio.insecure_channel(served.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return (await stub.ModelConfig(pb.ModelConfigRequest(name=name))).config


async def burst(client: AsyncClient, name: str, n: int) -> None:
    results = await asyncio.gather(*(client.infer(name, {"x": row(float(i))}) for i in range(n)))
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], row(2.0 * i))


async def test_batching_changes_live_in_config_behaviour_and_on_disk(
    served: Served, admin: AsyncAdminClient, client: AsyncClient, tmp_path: Path
) -> None:
    await register_fake(admin, tmp_path, "fake", delay_s=0.02)
    await burst(client, "fake", 4)
    assert batch_sizes(served, "fake") == [1, 1, 1, 1]  # no dynamic_batching: one by one

    # A long delay with a preferred size of 4: four requests make one batch at once.
    config = await admin.update(
        "fake", batching(max_queue_delay_us=2_000_000, preferred_batch_sizes=[4])
    )
    assert config.dynamic_batching.max_queue_delay_microseconds == 2_000_000
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    started = asyncio.get_running_loop().time()
    await burst(client, "fake", 4)
    assert asyncio.get_running_loop().time() - started < 1.0  # did not wait out the delay
    assert batch_sizes(served, "fake")[4:] == [4]
    served_config = await model_config(served, "fake")
    assert served_config.dynamic_batching.max_queue_delay_microseconds == 2_000_000
    on_disk = parse_config((served.repo / "fake" / "config.pbtxt").read_text(), "written")
    assert on_disk.dynamic_batching.max_queue_delay_microseconds == 2_000_000
    assert on_disk.backend == "fake" and on_disk.max_batch_size == 8

    # Smaller batches, then batching off again.
    await admin.update("fake", batching(max_batch_size=2, preferred_batch_sizes=[2]))
    await burst(client, "fake", 4)
    assert batch_sizes(served, "fake")[5:] == [2, 2]
    with pytest.raises(InferenceError) as too_big:
        await client.infer("fake", {"x": np.zeros((3, 4), np.float32)})
    assert too_big.value.code is grpc.StatusCode.INVALID_ARGUMENT
    config = await admin.update("fake", batching(enabled=False))
    assert not config.HasField("dynamic_batching")
    assert not (await model_config(served, "fake")).HasField("dynamic_batching")
    await burst(client, "fake", 2)
    assert batch_sizes(served, "fake")[7:] == [1, 1]


async def test_the_cache_switches_on_live(
    served: Served, admin: AsyncAdminClient, client: AsyncClient, tmp_path: Path
) -> None:
    await register_fake(admin, tmp_path, "fake")
    await admin.update("fake", batching(cache=True, cache_ttl_ms=60_000))
    for _ in range(3):
        await client.infer("fake", {"x": row(5.0)})
    assert batch_sizes(served, "fake") == [1]  # computed once, then answered from the cache
    version = (await admin.describe("fake")).versions[0]
    assert version.cache.enabled and version.cache.ttl_ms == 60_000
    assert (version.cache.hits, version.cache.misses) == (2, 1)
    assert version.cache.hit_ratio == pytest.approx(2 / 3)


async def test_removing_a_model_forgets_its_cached_answers_and_no_others(
    served: Served, admin: AsyncAdminClient, client: AsyncClient, tmp_path: Path
) -> None:
    for name in ("x", "y"):
        await register_fake(admin, tmp_path, name)
        await admin.update(name, batching(cache=True))
        await client.infer(name, {"x": row(5.0)})
    assert (await admin.describe("y")).shared_cache.entries == 2

    await admin.unregister("x")  # its files go: the same name and version may mean other bytes
    assert (await admin.describe("y")).shared_cache.entries == 1
    await register_fake(admin, tmp_path, "x")  # back as version 1 (its files could differ)
    await admin.update("x", batching(cache=True))
    await client.infer("x", {"x": row(5.0)})
    assert batch_sizes(served, "x") == [1]  # computed afresh, not answered from the cache
    await client.infer("y", {"x": row(5.0)})
    assert batch_sizes(served, "y") == [1]  # y's answer survived x leaving and coming back
    assert (await admin.describe("y")).versions[0].cache.hits == 1


async def test_changes_that_cannot_apply_live_are_refused_and_change_nothing(
    served: Served, admin: AsyncAdminClient, tmp_path: Path
) -> None:
    await register_fake(admin, tmp_path, "fake")
    before = (served.repo / "fake" / "config.pbtxt").read_text()
    refusals = {
        "input": ConfigUpdate(mc.ModelConfig(), ("input",)),
        "unknown field": ConfigUpdate(mc.ModelConfig(), ("no_such_field",)),
        "nothing": ConfigUpdate(mc.ModelConfig(), ()),
        "preferred above max": batching(preferred_batch_sizes=[16]),
        "a queue delay of 584,000 years": batching(max_queue_delay_us=2**64 - 1),
        "a queue delay just above 10 s": batching(max_queue_delay_us=10_000_001),
        "max_batch_size 0": batching(max_batch_size=0),
        "routing to an unknown arm": batching(routing_policy="fixed", fixed_arm="nope"),
    }
    for what, update in refusals.items():
        with pytest.raises(AdminError) as refused:
            await admin.update("fake", update)
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT, what
        if "queue delay" in what:
            assert "above the limit of 10000000 (10 s)" in str(refused.value), what
    assert (served.repo / "fake" / "config.pbtxt").read_text() == before
    assert not served.server.core.model("fake").config.HasField("dynamic_batching")
    with pytest.raises(AdminError) as unknown:
        await admin.update("nope", batching(cache=True))
    assert unknown.value.code is grpc.StatusCode.NOT_FOUND


async def test_unregister_finishes_queued_requests_then_removes_the_model(
    served: Served, admin: AsyncAdminClient, client: AsyncClient, tmp_path: Path
) -> None:
    # max_inflight_batches is 1 and batching is off: requests queue behind each other.
    await register_fake(admin, tmp_path, "slow", delay_s=0.1)
    requests = [asyncio.create_task(client.infer("slow", {"x": row(float(i))})) for i in range(5)]
    queue = served.server.core.model("slow").queue
    while queue.depth < 3:
        await asyncio.sleep(0.005)
    assert (await admin.describe("slow")).versions[0].queue.depth >= 3

    response = await admin.unregister("slow")
    assert list(response.versions) == ["1"] and response.files_removed
    results = await asyncio.gather(*requests)  # every queued request finished
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], row(2.0 * i))
    assert not (served.repo / "slow").exists()
    with pytest.raises(InferenceError) as gone:
        await client.infer("slow", {"x": row(1.0)})
    assert gone.value.code is grpc.StatusCode.NOT_FOUND
    assert "slow" not in {m.name for m in await admin.list_models()}
    with pytest.raises(AdminError) as missing:
        await admin.describe("slow")
    assert missing.value.code is grpc.StatusCode.NOT_FOUND
    with pytest.raises(AdminError) as again:
        await admin.unregister("slow")
    assert again.value.code is grpc.StatusCode.NOT_FOUND


async def test_unregister_can_keep_the_files(
    served: Served, admin: AsyncAdminClient, tmp_path: Path
) -> None:
    await register_fake(admin, tmp_path, "fake")
    response = await admin.unregister("fake", keep_files=True)
    assert not response.files_removed
    assert (served.repo / "fake" / "1" / "model.fake").is_file()
    (listed,) = [m for m in await admin.list_models() if m.name == "fake"]
    assert listed.state == "UNAVAILABLE" and "not loaded" in listed.reason
    assert not listed.serving_version and list(listed.versions) == ["1"]
