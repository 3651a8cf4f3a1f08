"""Variants on disk: atomic writes, reading back, staleness, clean-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infergate.backends.base import BackendOptions
from infergate.optimize import (
    clean_leftovers,
    list_variants,
    remove_variant,
    servable_variants,
    store,
)
from tests.optimize.conftest import copy_version


def record(version: Path, admitted: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "format": store.FORMAT,
        "backend": "onnxruntime",
        "variant": "int8-dynamic",
        "artifact": "model.onnx" if admitted else None,
        "parameters": {"inference_precision": "bf16"},
        "admitted": admitted,
        "figures": {"max_abs_error": float("nan"), "top1_agreement": 1.0},
        "source": store.fingerprint(version, [version / "model.onnx"]),
        **extra,
    }


def write(version: Path, admitted: bool = True, content: bytes = b"int8") -> store.StoredVariant:
    with store.staging(version, "onnxruntime", "int8-dynamic") as stage:
        if admitted:
            (stage.path / "model.onnx").write_bytes(content)
        return stage.commit(record(version, admitted))


@pytest.fixture
def version(tmp_path: Path) -> Path:
    return copy_version(tmp_path / "1")


def test_a_committed_variant_reads_back_without_rebuilding(version: Path) -> None:
    stored = write(version)
    assert stored.folder == version / "variants" / "onnxruntime.int8-dynamic"
    (again,) = list_variants(version)
    assert again.name == "onnxruntime.int8-dynamic" and again.servable
    assert again.artifact is not None and again.artifact.read_bytes() == b"int8"
    assert again.figures["max_abs_error"] is None  # NaN is not JSON: stored as null
    options = again.options(BackendOptions(extra={"performance_hint": "LATENCY"}))
    assert options.extra == {"performance_hint": "LATENCY", "inference_precision": "bf16"}
    assert sorted(p.name for p in (version / "variants").iterdir()) == [again.folder.name]


def test_a_failed_build_leaves_nothing_behind(version: Path) -> None:
    with pytest.raises(RuntimeError), store.staging(version, "onnxruntime", "int8-dynamic") as s:
        (s.path / "model.onnx").write_bytes(b"half")
        raise RuntimeError("converter crashed")
    assert list((version / "variants").iterdir()) == []
    assert list_variants(version) == []


def test_a_rebuild_replaces_the_old_variant_whole(version: Path) -> None:
    write(version, content=b"old")
    write(version, content=b"new")
    (stored,) = list_variants(version)
    assert stored.artifact is not None and stored.artifact.read_bytes() == b"new"
    assert [p.name for p in (version / "variants").iterdir()] == ["onnxruntime.int8-dynamic"]


def test_a_rejected_variant_keeps_its_figures_but_is_not_servable(version: Path) -> None:
    write(version, admitted=False)
    (stored,) = list_variants(version)
    assert not stored.admitted and stored.artifact is None and not stored.servable
    assert stored.figures["top1_agreement"] == 1.0
    assert servable_variants(version) == []


def test_a_changed_source_makes_the_variant_stale(version: Path) -> None:
    write(version)
    (version / "model.onnx").write_bytes(b"another model")
    (stored,) = list_variants(version)
    assert stored.stale and not stored.servable
    assert not list_variants(version, check_sources=False)[0].stale


def test_unreadable_records_and_staging_folders_are_skipped(version: Path) -> None:
    write(version)
    broken = version / "variants" / "openvino.int8"
    broken.mkdir()
    (broken / "gate.json").write_text("{not json")
    future = version / "variants" / "tflite.int8"
    future.mkdir()
    (future / "gate.json").write_text(json.dumps(record(version, format=99)))
    (version / "variants" / ".tmp-tflite.fp16-1-abcd").mkdir()
    assert [v.name for v in list_variants(version)] == ["onnxruntime.int8-dynamic"]


def test_remove_and_leftovers_of_a_dead_process(version: Path) -> None:
    write(version)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    leftover = version / "variants" / f".tmp-openvino.int8-{dead.stdout.strip()}-abcd"
    mine = version / "variants" / f".tmp-openvino.bf16-{os.getpid()}-abcd"
    leftover.mkdir()
    mine.mkdir()
    assert clean_leftovers(version) == [leftover]
    assert mine.exists()
    assert remove_variant(version, "onnxruntime", "int8-dynamic")
    assert not remove_variant(version, "onnxruntime", "int8-dynamic")
    assert list_variants(version) == []
