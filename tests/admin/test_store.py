"""The staging area and the repository's commit protocol, without a server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from infergate.gateway.core import live_config, store
from infergate.gateway.core.repository import (
    list_models,
    parse_config,
    read_model,
    version_folders,
)
from infergate.gateway.core.upload import ArtifactSpec, StagedUpload, check_artifacts
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import (
    AlreadyExists,
    ArtifactTooLarge,
    ChecksumMismatch,
    InvalidInput,
)

DATA = b"model bytes " * 1000


def spec(name: str = "model.onnx", data: bytes = DATA) -> ArtifactSpec:
    return ArtifactSpec(name, hashlib.sha256(data).hexdigest(), len(data))


def staged(repo: Path, data: bytes = DATA) -> Path:
    upload = StagedUpload.create(repo, [spec(data=data)])
    upload.write("model.onnx", data[:100])
    upload.write("model.onnx", data[100:])
    return upload.finish()


def test_an_upload_is_verified_and_invisible_until_committed(tmp_path: Path) -> None:
    folder = staged(tmp_path)
    assert folder.parent == tmp_path / ".staging"
    assert (folder / "model.onnx").read_bytes() == DATA
    assert list_models(tmp_path) == []  # the staging folder is not a model


def test_bad_uploads_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ChecksumMismatch):
        upload = StagedUpload.create(tmp_path, [spec()])
        upload.write("model.onnx", DATA[:-1] + b"!")
        upload.finish()
    with pytest.raises(InvalidInput, match="more bytes"):
        StagedUpload.create(tmp_path, [spec()]).write("model.onnx", DATA + b"x")
    with pytest.raises(InvalidInput, match="ended after 10 of"):
        upload = StagedUpload.create(tmp_path, [spec()])
        upload.write("model.onnx", DATA[:10])
        upload.finish()
    with pytest.raises(InvalidInput, match="did not announce"):
        StagedUpload.create(tmp_path, [spec()]).write("model.tflite", b"x")


def test_discard_removes_the_staged_files(tmp_path: Path) -> None:
    upload = StagedUpload.create(tmp_path, [spec()])
    upload.write("model.onnx", DATA[:10])
    upload.discard()
    assert list((tmp_path / ".staging").iterdir()) == []


def test_announced_artifacts_are_checked_before_any_byte() -> None:
    check_artifacts([spec(), spec("model.tflite")], max_bytes=len(DATA))
    with pytest.raises(ArtifactTooLarge, match="--max-artifact-mb"):
        check_artifacts([spec()], max_bytes=len(DATA) - 1)
    bad = {
        "none": [],
        "twice": [spec(), spec()],
        "short sha": [ArtifactSpec("model.onnx", "abc", 1)],
        "upper sha": [ArtifactSpec("model.onnx", "A" * 64, 1)],
        "negative": [ArtifactSpec("model.onnx", "a" * 64, -1)],
        "too many": [spec(f"f{i}.bin") for i in range(17)],
        "path": [spec("../x")],
        "hidden": [spec(".x")],
        "config": [spec("config.pbtxt")],
    }
    for what, artifacts in bad.items():
        with pytest.raises(InvalidInput):
            check_artifacts(artifacts, max_bytes=1 << 30)
            pytest.fail(what)


def test_commit_a_new_model_then_a_new_version(tmp_path: Path) -> None:
    config = mc.ModelConfig(name="m", max_batch_size=4)
    store.commit_version(tmp_path, "m", "1", staged(tmp_path), config)
    assert read_model(tmp_path, "m").version == "1"
    assert parse_config((tmp_path / "m" / "config.pbtxt").read_text(), "c").max_batch_size == 4

    assert store.next_version(tmp_path / "m") == "2"
    store.commit_version(tmp_path, "m", "2", staged(tmp_path, b"v2"), None)  # config kept
    assert (tmp_path / "m" / "2" / "model.onnx").read_bytes() == b"v2"
    assert parse_config((tmp_path / "m" / "config.pbtxt").read_text(), "c").max_batch_size == 4

    config.max_batch_size = 8
    store.commit_version(tmp_path, "m", "10", staged(tmp_path), config)
    assert version_folders(tmp_path / "m") == ["1", "2", "10"]
    assert store.read_config(tmp_path / "m") == config
    with pytest.raises(AlreadyExists):
        store.commit_version(tmp_path, "m", "2", staged(tmp_path), None)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "1",
        "10",
        "2",
        "config.pbtxt",
    ]


def test_remove_model(tmp_path: Path) -> None:
    store.commit_version(tmp_path, "m", "1", staged(tmp_path), None)
    store.remove_model(tmp_path, "m")
    assert not (tmp_path / "m").exists()
    assert list((tmp_path / ".staging").iterdir()) == []


@pytest.mark.parametrize("version", ["0", "01", "-1", "1.5", "v1", "1" * 19, ""])
def test_versions_are_canonical_positive_numbers(version: str) -> None:
    with pytest.raises(InvalidInput):
        store.check_version(version)


def test_live_merge_copies_only_the_named_fields() -> None:
    current = parse_config(
        'name: "m" max_batch_size: 8 dynamic_batching { max_queue_delay_microseconds: 5 '
        "preferred_batch_size: [2, 4] } response_cache { enable: true }",
        "current",
    )
    update = parse_config("dynamic_batching { max_queue_delay_microseconds: 9 }", "update")
    merged = live_config.apply_update(
        current, update, ["dynamic_batching.max_queue_delay_microseconds"]
    )
    assert merged.dynamic_batching.max_queue_delay_microseconds == 9
    assert list(merged.dynamic_batching.preferred_batch_size) == [2, 4]
    assert merged.response_cache.enable
    off = live_config.apply_update(current, mc.ModelConfig(), ["dynamic_batching"])
    assert not off.HasField("dynamic_batching")
    assert current.dynamic_batching.max_queue_delay_microseconds == 5  # not modified


def test_an_unknown_update_mask_is_named_briefly() -> None:
    # A hostile caller's mask of thousands of long paths must not come back whole in
    # the status message (the admin fuzz found a 5,053-character one).
    current = parse_config('name: "m" max_batch_size: 8', "current")
    paths = [f"no_such_field_{i}_" + "x" * 200 for i in range(500)]
    with pytest.raises(InvalidInput) as refused:
        live_config.apply_update(current, mc.ModelConfig(), paths)
    message = str(refused.value)
    assert "no_such_field_0_" in message and "(500 items)" in message
    assert len(message) < 2000
