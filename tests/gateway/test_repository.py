"""Loading the model repository: configs, derived configs, and models that fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from infergate.backends.base import BackendOptions
from infergate.backends.discovery import discover
from infergate.gateway.core.cache import ResponseCache
from infergate.gateway.core.lifecycle import ModelLifecycle
from infergate.gateway.core.lru_store import LRUStore
from infergate.gateway.core.pipeline import InferenceCore
from infergate.gateway.core.repository import parse_config, read_model
from infergate.gateway.core.request import InferRequest, InputTensor
from infergate.schema.errors import ModelLoadError, ModelNotReady
from tests import onnx_models
from tests.conftest import DEMO_REPOSITORY

TRITON_CONFIG = """
name: "digits"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { latest { num_versions: 1 } }
input [ { name: "x" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }
"""


def lifecycle() -> ModelLifecycle:
    return ModelLifecycle(discover().backends, BackendOptions(), ResponseCache(LRUStore(1 << 20)))


def test_a_triton_config_reads_as_it_is_with_unknown_fields_skipped() -> None:
    config = parse_config(TRITON_CONFIG, "config.pbtxt")
    assert config.max_batch_size == 8
    assert config.instance_group[0].count == 2
    assert config.dynamic_batching.max_queue_delay_microseconds == 100


def test_a_broken_config_is_a_load_error_naming_the_file() -> None:
    with pytest.raises(ModelLoadError, match=r"config\.pbtxt"):
        parse_config("max_batch_size: [oops", "config.pbtxt")


def test_the_newest_version_folder_is_served(tmp_path: Path) -> None:
    for version in ("1", "3", "20"):
        onnx_models.add_model(tmp_path / "m" / version / "model.onnx")
    (tmp_path / "m" / "notes").mkdir()
    assert read_model(tmp_path, "m").version == "20"


async def test_failing_models_are_reported_and_do_not_stop_the_others(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPOSITORY / "digits", repo / "digits")
    (repo / "corrupt" / "1").mkdir(parents=True)
    (repo / "corrupt" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    (repo / "empty").mkdir()
    (repo / "wrongconfig" / "1").mkdir(parents=True)
    shutil.copy(DEMO_REPOSITORY / "digits" / "1" / "model.onnx", repo / "wrongconfig" / "1")
    (repo / "wrongconfig" / "config.pbtxt").write_text(
        TRITON_CONFIG.replace('"digits"', '"wrongconfig"').replace('"x"', '"pixels"')
    )
    (repo / "pinned" / "1").mkdir(parents=True)
    shutil.copy(DEMO_REPOSITORY / "digits" / "1" / "model.onnx", repo / "pinned" / "1")
    (repo / "pinned" / "config.pbtxt").write_text('backend: "tensorrt_llm"')
    # A typo'd queue delay (11 s) would hang every lone request that long.
    (repo / "slow" / "1").mkdir(parents=True)
    shutil.copy(DEMO_REPOSITORY / "digits" / "1" / "model.onnx", repo / "slow" / "1")
    (repo / "slow" / "config.pbtxt").write_text(
        TRITON_CONFIG.replace('"digits"', '"slow"').replace(
            "max_queue_delay_microseconds: 100", "max_queue_delay_microseconds: 11000000"
        )
    )

    models = lifecycle()
    gateway = InferenceCore(models.registry, models.cache)
    try:
        await models.load_repository(repo)
        index = {row.name: row for row in gateway.registry.index()}
        assert index["digits"].state == "READY"
        assert index["corrupt"].state == "UNAVAILABLE"
        assert "onnxruntime could not load model.onnx" in index["corrupt"].reason
        assert "no version folder" in index["empty"].reason
        assert "'pixels'" in index["wrongconfig"].reason and "'x'" in index["wrongconfig"].reason
        assert "tensorrt_llm" in index["pinned"].reason
        assert index["slow"].state == "UNAVAILABLE"
        assert "max_queue_delay_microseconds is 11000000, above the limit" in index["slow"].reason
        with pytest.raises(ModelNotReady, match="corrupt"):
            gateway.model("corrupt")
        result = await gateway.infer(
            InferRequest(
                "digits", "", "", [InputTensor("x", "FP32", (1, 64), np.zeros((1, 64), np.float32))]
            )
        )
        assert result.outputs[0].data.shape == (1, 10)
    finally:
        await models.aclose()


async def test_a_failed_reload_keeps_the_old_version_serving(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPOSITORY / "digits", repo / "digits")
    models = lifecycle()
    try:
        await models.load_repository(repo)
        (repo / "digits" / "2").mkdir()
        (repo / "digits" / "2" / "model.onnx").write_bytes(b"garbage")
        with pytest.raises(ModelLoadError):
            await models.load_from_repository(repo, "digits")
        assert models.registry.get("digits").version == "1"
        (entry,) = [e for e in models.registry if e.name == "digits"]
        assert entry.state.value == "READY" and "last load failed" in entry.reason
    finally:
        await models.aclose()


def test_model_names_with_path_tricks_are_refused(tmp_path: Path) -> None:
    for name in ("../etc", "a/b", ".hidden", ""):
        with pytest.raises(ModelLoadError, match="not a valid model name"):
            read_model(tmp_path, name)
