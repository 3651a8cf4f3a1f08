"""A version folder with several formats: which backend serves it, and under what names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from infergate.backends.base import BackendOptions
from infergate.gateway.core.loader import choose_backends, load_model
from infergate.gateway.core.repository import parse_config, read_model
from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import TensorSpec
from tests.backends.support import BACKENDS
from tests.conftest import DEMO_REPOSITORY

needs_all = pytest.mark.skipif(
    list(BACKENDS) != ["onnxruntime", "openvino", "tflite"],
    reason="these cases are written for the three bundled backends",
)


def model_dir(tmp_path: Path, config: str | None, files: tuple[str, ...]) -> Path:
    """A repository with one model `m` made of digits' files and the given config."""
    repo = tmp_path / "repo"
    version = repo / "m" / "1"
    version.mkdir(parents=True)
    for name in files:
        shutil.copy(DEMO_REPOSITORY / "digits" / "1" / name, version / name)
    if config is not None:
        (repo / "m" / "config.pbtxt").write_text(config)
    return repo


def chosen(tmp_path: Path, config: str | None, files: tuple[str, ...] = ()) -> str:
    repo = model_dir(tmp_path, config, files or ("model.onnx", "model.tflite"))
    return choose_backends(read_model(repo, "m"), BACKENDS)[0].name


@needs_all
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, "onnxruntime"),  # no config: the first backend, in entry-point order
        ("max_batch_size: 8", "onnxruntime"),
        ('backend: "tflite"', "tflite"),
        ('backend: "openvino"', "openvino"),
        ('allowed_backends: ["tflite"]', "tflite"),
        ('allowed_backends: ["tflite", "openvino"]', "openvino"),  # still entry-point order
        ('allowed_backends: ["tensorrt", "tflite"]', "tflite"),  # one not installed here
        ('backend: "tflite" allowed_backends: ["openvino", "tflite"]', "tflite"),
        ('platform: "tensorflow_tflite"', "tflite"),  # a Triton config pins through platform
        # ...but a config that lists allowed_backends is ours, and says what it means.
        ('platform: "onnxruntime_onnx" allowed_backends: ["tflite"]', "tflite"),
    ],
)
def test_which_backend_serves_a_multi_format_model(
    tmp_path: Path, config: str | None, expected: str
) -> None:
    assert chosen(tmp_path, config) == expected


@needs_all
def test_the_first_allowed_backend_that_finds_its_artifact_is_taken(tmp_path: Path) -> None:
    assert chosen(tmp_path, None, ("model.tflite",)) == "tflite"
    assert chosen(tmp_path / "b", 'allowed_backends: ["tflite", "openvino"]', ("model.onnx",)) == (
        "openvino"
    )


@needs_all
@pytest.mark.parametrize(
    ("config", "files", "message"),
    [
        (
            'backend: "tflite" allowed_backends: ["openvino"]',
            ("model.onnx", "model.tflite"),
            r"backend 'tflite' is pinned but allowed_backends \['openvino'\] leave it out",
        ),
        (
            'allowed_backends: ["tensorrt"]',
            ("model.onnx",),
            r"none of its allowed_backends \['tensorrt'\] is available here",
        ),
        (
            'allowed_backends: ["onnxruntime", "openvino"]',
            ("model.tflite",),
            r"no artifact any allowed backend can load .*\['model.onnx', 'model.xml'\]",
        ),
        (
            'backend: "tflite"',
            ("model.onnx",),
            r"backend 'tflite' needs one of \['model.tflite'\]",
        ),
    ],
)
def test_a_model_no_allowed_backend_can_serve_is_refused(
    tmp_path: Path, config: str, files: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        chosen(tmp_path, config, files)


def test_a_tflite_model_without_config_goes_by_its_signature_names(tmp_path: Path) -> None:
    repo = model_dir(tmp_path, None, ("model.tflite",))
    model = load_model(read_model(repo, "m"), BACKENDS, BackendOptions(), 16)
    try:
        assert model.backend == "tflite"
        assert list(model.runtime.inputs) == [TensorSpec("x", "FP32", (-1, 64))]
        assert list(model.runtime.outputs) == [TensorSpec("output_0", "FP32", (-1, 10))]
        assert [o.name for o in model.config.output] == ["output_0"]
        assert model.config.max_batch_size == 16 and model.config.platform == "tensorflow_tflite"
    finally:
        model.runtime.close()


def test_config_names_reach_the_backend_and_come_back_mapped(tmp_path: Path) -> None:
    config = (DEMO_REPOSITORY / "digits" / "config.pbtxt").read_text()
    config = config.replace('"onnxruntime"', '"tflite"').replace('"onnxruntime_onnx"', '""')
    repo = model_dir(tmp_path, config.replace('"digits"', '"m"'), ("model.tflite",))
    parse_config(config, "check")  # still a valid config
    model = load_model(read_model(repo, "m"), BACKENDS, BackendOptions(), 16)
    try:
        # The Keras export calls them serving_default_x:0 and StatefulPartitionedCall_1:0.
        assert [t.name for t in model.runtime.inputs] == ["x"]
        assert [t.name for t in model.runtime.outputs] == ["y"]
        outputs = model.runtime.infer({"x": np.zeros((2, 64), np.float32)})
        assert list(outputs) == ["y"] and outputs["y"].shape == (2, 10)
    finally:
        model.runtime.close()
