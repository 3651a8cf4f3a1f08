"""Triton config fields operators rely on (issue 16, item 3): list syntax parses,
every field infergate does not act on is named in one warning, and version_policy,
instance_group (count, kind) and model_warmup do what Triton's docs say."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.clients import AsyncClient, InferenceError
from infergate.gateway.core.config_fields import unacted_fields
from infergate.gateway.core.config_text import parse_config_text
from infergate.gateway.server import GatewayServer
from infergate.settings import Settings
from tests import onnx_models


def add_model(repo: Path, name: str, config: str, versions: tuple[int, ...] = (1,)) -> None:
    for version in versions:
        onnx_models.add_model(repo / name / str(version) / "model.onnx")
    (repo / name / "config.pbtxt").write_text(config)


async def started(repo: Path) -> GatewayServer:
    server = GatewayServer(
        Settings(
            metrics_port=0, model_repository=repo, port=0, backends=("onnxruntime",), use_gpu=False
        )
    )
    await server.start()
    return server


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    repo = tmp_path / "repo"
    add_model(repo, "latest2", "version_policy: { latest: { num_versions: 2 } }", (1, 2, 3))
    add_model(repo, "every", "version_policy: { all { } }", (1, 2, 3))
    add_model(repo, "picked", "version_policy: { specific: { versions: [ 1, 3 ] } }", (1, 2, 3))
    add_model(repo, "plain", "max_batch_size: 8", (1, 2))
    add_model(
        repo,
        "instanced",
        """
        max_batch_size: 8
        dynamic_batching { }
        instance_group [ { count: 2 kind: KIND_CPU }, { count: 1 kind: KIND_CPU } ]
        """,
    )
    add_model(
        repo,
        "warmed",
        """
        max_batch_size: 8
        input [ { name: "a" data_type: TYPE_FP32 dims: [ 4 ] },
                { name: "b" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "sum" data_type: TYPE_FP32 dims: [ 4 ] },
                 { name: "diff" data_type: TYPE_FP32 dims: [ 4 ] } ]
        model_warmup [
          { name: "zeros" batch_size: 2 count: 3
            inputs { key: "a" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }
            inputs { key: "b" value: { data_type: TYPE_FP32 dims: [ 4 ] random_data: true } } },
          { name: "from a file" batch_size: 1
            inputs { key: "a" value: { data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "a.bin" } }
            inputs { key: "b" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } }
        ]
        """,
    )
    (repo / "warmed" / "warmup").mkdir()
    (repo / "warmed" / "warmup" / "a.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    server = await started(repo)
    try:
        yield server
    finally:
        await server.stop()


def served_versions(server: GatewayServer, name: str) -> list[str]:
    return list(server.core.registry.entry(name).versions)


async def test_version_policies_serve_the_versions_they_name(gateway: GatewayServer) -> None:
    assert served_versions(gateway, "latest2") == ["2", "3"]
    assert served_versions(gateway, "every") == ["1", "2", "3"]
    assert served_versions(gateway, "picked") == ["1", "3"]
    assert served_versions(gateway, "plain") == ["2"]  # the default: latest 1
    a = np.ones((1, 4), np.float32)
    async with AsyncClient(gateway.address) as client:
        for model, version in [("latest2", "2"), ("every", "1"), ("picked", "3"), ("picked", "")]:
            outputs = await client.infer(model, {"a": a, "b": a}, version=version)
            np.testing.assert_array_equal(outputs["sum"], 2 * a)
        with pytest.raises(InferenceError) as caught:
            await client.infer("picked", {"a": a, "b": a}, version="2")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert await client.is_model_ready("latest2", "2")
        assert not await client.is_model_ready("latest2", "1")
        metadata = await client.model_metadata("every")
        assert list(metadata.versions) == ["1", "2", "3"]
    # A request naming no version gets the newest that serves.
    assert gateway.core.model("picked").version == "3"


async def test_instance_group_count_sets_the_batches_in_flight(gateway: GatewayServer) -> None:
    model = gateway.core.model("instanced")
    assert model.instances == 3
    assert model.queue.policy.max_inflight == 3
    assert all(arm.load.capacity == 3 for arm in model.arms)
    assert gateway.core.model("plain").queue.policy.max_inflight == 1  # the setting


async def test_model_warmup_samples_run_and_become_the_canary(gateway: GatewayServer) -> None:
    model = gateway.core.model("warmed")
    canary = model.arms[0].canary
    assert canary is not None
    assert canary["a"].shape == (2, 4) and not canary["a"].any()  # the first sample
    assert canary["b"].shape == (2, 4) and canary["b"].any()  # random data


async def test_kind_gpu_without_a_gpu_is_refused_clearly(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "on_gpu", "instance_group [ { kind: KIND_GPU } ]")
    server = await started(repo)
    try:
        entry = server.core.registry.entry("on_gpu")
        assert entry.state.value == "UNAVAILABLE"
        assert "KIND_GPU" in entry.reason and "CPU" in entry.reason
    finally:
        await server.stop()


async def test_a_failing_described_warm_up_fails_the_load(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_model(
        repo,
        "missing_file",
        """
        model_warmup [ { name: "w" batch_size: 1
          inputs { key: "a" value: { data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "nope" } }
          inputs { key: "b" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]
        """,
    )
    server = await started(repo)
    try:
        entry = server.core.registry.entry("missing_file")
        assert entry.state.value == "UNAVAILABLE" and "cannot read" in entry.reason
    finally:
        await server.stop()


async def test_a_failing_synthetic_warm_up_is_only_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Zeros are no valid input for every model: the model loads anyway."""
    repo = tmp_path / "repo"
    onnx_models.fails_on_zeros_model(repo / "zero_hating" / "1" / "model.onnx")
    with caplog.at_level(logging.WARNING):
        server = await started(repo)
    try:
        assert server.core.model("zero_hating").arms[0].canary is None
        assert any("synthetic warm-up" in r.getMessage() for r in caplog.records)
        async with AsyncClient(server.address) as client:
            x = np.full((1, 4), 1.0, np.float32)
            np.testing.assert_array_equal((await client.infer("zero_hating", {"x": x}))["y"], x)
    finally:
        await server.stop()


def test_every_field_infergate_does_not_act_on_is_named(caplog: pytest.LogCaptureFixture) -> None:
    parsed = parse_config_text(
        """
        name: "m" max_batch_size: 8
        input [ { name: "x" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3 ] } ]
        instance_group [ { count: 2 kind: KIND_CPU gpus: [ 0 ] } ]
        dynamic_batching { priority_levels: 2 }
        optimization { graph { level: 1 } }
        some_future_field [ { a: 1 } ]
        """
    )
    assert parsed.unknown_fields == ("some_future_field",)
    assert unacted_fields(parsed.config) == [
        "input.format",
        "instance_group.gpus",
        "dynamic_batching.priority_levels",
        "optimization",
    ]
