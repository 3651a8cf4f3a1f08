"""One suite every installed backend passes, on the same models and inputs.

Each demo model is loaded pinned to each backend the way the gateway loads it
(config checked against the artifact, tensor names mapped, warm-up run), and must
answer like the fp32 ONNX file on ONNX Runtime's CPU provider, within RTOL/ATOL
(support.py says why those). The TFLite files are Keras exports of the same
weights, so their tensors have other names: they must still answer as x and y.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import TensorSpec
from tests.backends.support import ATOL, BACKENDS, RTOL, Loaded, load_pinned, reference, sample
from tests.conftest import DEMO_REPOSITORY

MODELS = ("digits", "cnn")
SHAPES = {"digits": ((-1, 64), (-1, 10)), "cnn": ((-1, 3, 32, 32), (-1, 10))}

pytestmark = pytest.mark.parametrize("backend", list(BACKENDS))


@pytest.fixture(scope="module")
def load() -> Iterator[Callable[[str, str], Loaded]]:
    """Loads each backend x model once for the module."""
    cache: dict[tuple[str, str], Loaded] = {}

    def get(backend: str, model: str) -> Loaded:
        if (backend, model) not in cache:
            cache[backend, model] = load_pinned(backend, model)
        return cache[backend, model]

    yield get
    for loaded in cache.values():
        loaded.runtime.close()


def test_every_demo_model_is_there_for_every_backend(backend: str) -> None:
    for model in MODELS:
        assert BACKENDS[backend].find_artifact(DEMO_REPOSITORY / model / "1") is not None


@pytest.mark.parametrize("model", MODELS)
def test_it_serves_the_configs_names_and_shapes(
    load: Callable[[str, str], Loaded], backend: str, model: str
) -> None:
    runtime = load(backend, model).runtime
    x_shape, y_shape = SHAPES[model]
    assert list(runtime.inputs) == [TensorSpec("x", "FP32", x_shape)]
    assert list(runtime.outputs) == [TensorSpec("y", "FP32", y_shape)]
    assert runtime.device == "cpu"  # OPTIONS turn the GPU off; these run on any machine


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("rows", [1, 8, 32])
def test_outputs_match_the_fp32_onnxruntime_reference(
    load: Callable[[str, str], Loaded], backend: str, model: str, rows: int
) -> None:
    loaded = load(backend, model)
    x = sample(loaded.spec, rows, seed=rows)
    y = loaded.runtime.infer({"x": x})["y"]
    assert y.dtype == np.float32 and y.shape == (rows, 10)
    np.testing.assert_allclose(y, reference(model, {"x": x}), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("model", MODELS)
def test_the_batch_dimension_varies_from_call_to_call(
    load: Callable[[str, str], Loaded], backend: str, model: str
) -> None:
    loaded = load(backend, model)
    # Up, down, repeated, back: every runtime that caches a shape must follow.
    for i, rows in enumerate((1, 5, 32, 2, 2, 5, 1, 17)):
        x = sample(loaded.spec, rows, seed=100 + i)
        y = loaded.runtime.infer({"x": x})["y"]
        np.testing.assert_allclose(y, reference(model, {"x": x}), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("model", MODELS)
def test_concurrent_calls_from_several_threads_are_each_right(
    load: Callable[[str, str], Loaded], backend: str, model: str
) -> None:
    loaded = load(backend, model)
    # Different batch sizes per call, so that a shared buffer or a shape cached
    # by another thread would show as a wrong answer or a wrong shape.
    cases = [sample(loaded.spec, 1 + (i % 4) * 3, seed=200 + i) for i in range(48)]
    expected = [reference(model, {"x": x}) for x in cases]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda x: loaded.runtime.infer({"x": x})["y"], cases))
    for y, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


def _copy_version(tmp_path: Path, model: str = "digits") -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPOSITORY / model, repo / model)
    return repo


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_artifact_fails_to_load_naming_it(
    tmp_path: Path, backend: str, damage: str
) -> None:
    repo = _copy_version(tmp_path)
    version = repo / "digits" / "1"
    artifact = BACKENDS[backend].find_artifact(version)
    assert artifact is not None
    data = artifact.read_bytes()
    broken = {"garbage": b"\x00not a model\xff" * 64, "truncated": data[: len(data) // 2]}
    artifact.write_bytes(broken.get(damage, b""))
    with pytest.raises(ModelLoadError) as error:
        load_pinned(backend, "digits", repo)
    assert artifact.name in str(error.value)


def test_an_artifact_that_does_not_fit_the_config_is_refused_naming_both(
    tmp_path: Path, backend: str
) -> None:
    # digits' config (x: [64]) over cnn's files (x: [3, 32, 32]).
    repo = _copy_version(tmp_path)
    for path in (repo / "digits" / "1").iterdir():
        shutil.copy(DEMO_REPOSITORY / "cnn" / "1" / path.name, path)
    with pytest.raises(ModelLoadError) as error:
        load_pinned(backend, "digits", repo)
    message = str(error.value)
    assert "[-1, 64]" in message and "[-1, 3, 32, 32]" in message


@pytest.mark.parametrize("model", MODELS)
def test_read_only_inputs_as_decoded_from_a_request(
    load: Callable[[str, str], Loaded], backend: str, model: str
) -> None:
    # The gateway decodes raw request bytes without copying: the arrays are read-only.
    loaded = load(backend, model)
    x = sample(loaded.spec, 3, seed=300)
    frozen = np.frombuffer(x.tobytes(), dtype=np.float32).reshape(x.shape)
    assert not frozen.flags.writeable
    y = loaded.runtime.infer({"x": frozen})["y"]
    np.testing.assert_allclose(y, reference(model, {"x": x}), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(frozen, x)
