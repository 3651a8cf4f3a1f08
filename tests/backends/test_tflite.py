"""What only the TFLite backend does: XNNPACK, one interpreter per thread, resizing."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from infergate.backends.base import BackendOptions
from infergate.backends.tflite import TfLiteBackend, TfLiteModel
from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import TensorSpec
from tests.backends.support import ATOL, RTOL, reference
from tests.conftest import DEMO_REPOSITORY

pytest.importorskip("ai_edge_litert")

CONFIG_NAMES = BackendOptions(
    expected_inputs=(TensorSpec("x", "FP32", (-1, 64)),),
    expected_outputs=(TensorSpec("y", "FP32", (-1, 10)),),
)


def load(model: str = "digits", options: BackendOptions = CONFIG_NAMES) -> TfLiteModel:
    artifact = DEMO_REPOSITORY / model / "1" / "model.tflite"
    loaded = TfLiteBackend().load(artifact, options)
    assert isinstance(loaded, TfLiteModel)
    return loaded


@pytest.mark.parametrize("model", ["digits", "cnn"])
def test_xnnpack_runs_the_demo_models(model: str) -> None:
    # LiteRT shows a delegated partition as a DELEGATE node; XNNPACK is the only
    # delegate LiteRT applies by itself on a CPU.
    loaded = load(model, BackendOptions())
    assert loaded.xnnpack
    loaded.close()


def test_each_thread_gets_its_own_interpreter() -> None:
    loaded = load()
    assert loaded.interpreters == 1  # the loading thread's, which described the model
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    want = reference("digits", {"x": x})
    results: list[np.ndarray] = []

    def call_twice() -> None:
        for _ in range(2):
            results.append(loaded.infer({"x": x})["y"])

    threads = [threading.Thread(target=call_twice) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loaded.interpreters == 4
    assert len(results) == 6
    for y in results:
        np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)
    loaded.close()


def test_resizes_only_when_the_batch_shape_changes() -> None:
    loaded = load()
    x4, x2 = np.zeros((4, 64), np.float32), np.zeros((2, 64), np.float32)
    before = loaded.allocations
    for x in (x4, x4, x4, x2, x2, x4):
        loaded.infer({"x": x})
    assert loaded.allocations - before == 3  # to 4, to 2, back to 4
    loaded.close()


def test_the_artifacts_own_names_differ_and_are_mapped() -> None:
    loaded = load()
    assert [t.name for t in loaded.inputs] == ["x"] and [t.name for t in loaded.outputs] == ["y"]
    unmapped = load(options=BackendOptions())
    assert [t.name for t in unmapped.inputs] == ["x"]  # the signature name
    assert [t.name for t in unmapped.outputs] == ["output_0"]
    loaded.close()
    unmapped.close()


def test_thread_count_is_settable_and_checked() -> None:
    assert load(options=BackendOptions(intra_op_threads=1)).infer(
        {"x": np.zeros((1, 64), np.float32)}
    )["output_0"].shape == (1, 10)
    with pytest.raises(ModelLoadError, match="num_threads must be a number"):
        load(options=BackendOptions(extra={"num_threads": "lots"}))


def test_an_unknown_signature_is_a_load_error() -> None:
    with pytest.raises(
        ModelLoadError, match=r"no signature 'predict' \(it has \['serving_default'\]\)"
    ):
        load(options=BackendOptions(extra={"signature": "predict"}))


def test_a_missing_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read it"):
        TfLiteBackend().load(tmp_path / "model.tflite", BackendOptions())
