"""What only the OpenVINO backend does: IR, the performance hint, its infer request pool."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from infergate.backends.base import BackendOptions
from infergate.backends.openvino import OpenVinoBackend, OpenVinoModel, compile_config
from infergate.schema.errors import ModelLoadError
from tests.backends.support import ATOL, RTOL, load_pinned, reference
from tests.conftest import DEMO_REPOSITORY

ov = pytest.importorskip("openvino")


def ir_repository(tmp_path: Path) -> Path:
    """digits as OpenVINO IR (model.xml + model.bin) beside its ONNX file."""
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPOSITORY / "digits", repo / "digits")
    version = repo / "digits" / "1"
    model = ov.Core().read_model(str(version / "model.onnx"))
    ov.save_model(model, str(version / "model.xml"), compress_to_fp16=False)
    return repo


def test_ir_is_preferred_and_answers_like_the_onnx_file(tmp_path: Path) -> None:
    repo = ir_repository(tmp_path)
    version = repo / "digits" / "1"
    assert OpenVinoBackend().find_artifact(version) == version / "model.xml"
    (version / "model.onnx").unlink()  # so that nothing but the IR can be what runs
    loaded = load_pinned("openvino", "digits", repo)
    try:
        x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
        y = loaded.runtime.infer({"x": x})["y"]
        np.testing.assert_allclose(y, reference("digits", {"x": x}), rtol=RTOL, atol=ATOL)
    finally:
        loaded.runtime.close()


def test_ir_without_its_weights_fails_to_load(tmp_path: Path) -> None:
    repo = ir_repository(tmp_path)
    (repo / "digits" / "1" / "model.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"(?s)openvino could not read model\.xml: .*bin file"):
        load_pinned("openvino", "digits", repo)


def test_throughput_is_the_default_hint_and_precision_stays_fp32() -> None:
    config = compile_config(BackendOptions())
    assert config["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert config["INFERENCE_PRECISION_HINT"] == "f32"
    assert "INFERENCE_NUM_THREADS" not in config


def test_hint_threads_and_streams_are_settable() -> None:
    options = BackendOptions(
        intra_op_threads=1, extra={"performance_hint": "latency", "num_streams": "1"}
    )
    assert compile_config(options) == {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": "1",
        "NUM_STREAMS": "1",
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"performance_hint": "fastest"}, "performance_hint must be one of"),
        ({"inference_precision": "int3"}, "inference_precision must be one of"),
        ({"infer_requests": "many"}, "infer_requests must be a number"),
    ],
)
def test_bad_settings_are_load_errors(extra: dict[str, str], message: str) -> None:
    artifact = DEMO_REPOSITORY / "digits" / "1" / "model.onnx"
    with pytest.raises(ModelLoadError, match=message):
        OpenVinoBackend().load(artifact, BackendOptions(extra=extra))


@pytest.mark.parametrize("hint", ["LATENCY", "THROUGHPUT"])
def test_two_batches_can_be_in_flight_under_either_hint(hint: str) -> None:
    artifact = DEMO_REPOSITORY / "cnn" / "1" / "model.onnx"
    model = OpenVinoBackend().load(artifact, BackendOptions(extra={"performance_hint": hint}))
    try:
        assert isinstance(model, OpenVinoModel)
        assert model.performance_hint == hint
        assert model.infer_requests >= 2
    finally:
        model.close()


def test_infer_requests_setting_sizes_the_pool() -> None:
    artifact = DEMO_REPOSITORY / "digits" / "1" / "model.onnx"
    model = OpenVinoBackend().load(artifact, BackendOptions(extra={"infer_requests": "5"}))
    assert isinstance(model, OpenVinoModel) and model.infer_requests == 5
    model.close()


def test_a_models_config_parameters_choose_its_hint(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPOSITORY / "digits", repo / "digits")
    config = repo / "digits" / "config.pbtxt"
    config.write_text(
        config.read_text()
        + 'parameters { key: "performance_hint" value { string_value: "LATENCY" } }\n'
    )
    loaded = load_pinned("openvino", "digits", repo)
    try:
        assert isinstance(loaded.runtime, OpenVinoModel)
        assert loaded.runtime.performance_hint == "LATENCY"
    finally:
        loaded.runtime.close()
