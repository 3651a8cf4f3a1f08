"""Tests for models/make_demo_models.py: layout, declared signatures, accuracy, determinism.

Only the small models are built; mlp_large (~100 MB) would make CI slow and is
exercised by `make models` instead. config.pbtxt is checked with a few regular
expressions rather than parsed into a ModelConfig, so these tests do not depend
on the generated protobuf code.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "models" / "make_demo_models.py"
SMALL_MODELS = ("digits", "cnn")


def _load_script() -> ModuleType:
    # models/ is not a package (it is a directory of artifacts plus one
    # script), so load the script by path. Registering it in sys.modules
    # before exec lets dataclasses resolve the module's annotations.
    spec = importlib.util.spec_from_file_location("make_demo_models", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mdm = _load_script()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repository")
    # TFLite conversion needs tensorflow and takes seconds: tested on its own below.
    paths = mdm.build_models(repo, SMALL_MODELS, tflite=False)
    assert paths == [repo / name / "1" / "model.onnx" for name in SMALL_MODELS]
    return repo


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class DeclaredTensor:
    name: str
    data_type: str
    dims: list[int]


@dataclass(frozen=True)
class DeclaredConfig:
    name: str
    max_batch_size: int
    input: DeclaredTensor
    output: DeclaredTensor


def _parse_config(text: str) -> DeclaredConfig:
    """Pull the handful of fields the tests care about out of config.pbtxt text."""

    def tensor(section: str) -> DeclaredTensor:
        block = re.search(rf"^{section} \[\n(.*?)^\]", text, re.S | re.M)
        assert block is not None, f"no {section} block"
        body = block.group(1)
        name = re.search(r'name: "([^"]+)"', body)
        dtype = re.search(r"data_type: (\w+)", body)
        dims = re.search(r"dims: \[([^\]]*)\]", body)
        assert name and dtype and dims, body
        return DeclaredTensor(
            name.group(1), dtype.group(1), [int(d) for d in dims.group(1).split(",")]
        )

    def scalar(field: str) -> str:
        match = re.search(rf'^{field}: "?([^"\n]+?)"?$', text, re.M)
        assert match is not None, f"no {field}"
        return match.group(1)

    return DeclaredConfig(
        name=scalar("name"),
        max_batch_size=int(scalar("max_batch_size")),
        input=tensor("input"),
        output=tensor("output"),
    )


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_layout_and_config_match_model(repository: Path, name: str) -> None:
    config_file = repository / name / "config.pbtxt"
    model_file = repository / name / "1" / "model.onnx"
    assert config_file.is_file()
    assert model_file.is_file()

    text = config_file.read_text()
    # Not pinned to a backend: every backend that loads an artifact becomes an arm.
    assert "platform:" not in text and "backend:" not in text
    config = _parse_config(text)
    assert config.name == name
    assert config.max_batch_size > 0
    assert "dynamic_batching { max_queue_delay_microseconds:" in config_file.read_text()

    session = _session(model_file)
    for declared, actual in (
        (config.input, session.get_inputs()),
        (config.output, session.get_outputs()),
    ):
        assert len(actual) == 1
        assert actual[0].name == declared.name
        assert declared.data_type == "TYPE_FP32"
        assert actual[0].type == "tensor(float)"
        # Config dims exclude the batch dim; the graph's leading dim is symbolic.
        assert actual[0].shape == ["batch", *declared.dims]

    model = onnx.load(str(model_file))
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.doc_string


@pytest.mark.parametrize("name", SMALL_MODELS)
@pytest.mark.parametrize("batch", [1, 5])
def test_runs_at_variable_batch(repository: Path, name: str, batch: int) -> None:
    session = _session(repository / name / "1" / "model.onnx")
    input_shape = session.get_inputs()[0].shape[1:]
    output_shape = session.get_outputs()[0].shape[1:]
    x = np.random.default_rng(0).random((batch, *input_shape), dtype=np.float32)
    (y,) = session.run(["y"], {"x": x})
    assert y.shape == (batch, *output_shape)
    assert y.dtype == np.float32
    assert np.isfinite(y).all()


def test_digits_accuracy_on_held_out_split(repository: Path) -> None:
    _, _, x_test, y_test = mdm.load_digits_split()
    assert len(y_test) == 1797 - 1500
    session = _session(repository / "digits" / "1" / "model.onnx")
    (probs,) = session.run(["y"], {"x": x_test})
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(probs.argmax(axis=1) == y_test))
    assert accuracy >= 0.9


def test_build_is_deterministic(repository: Path, tmp_path: Path) -> None:
    mdm.build_models(tmp_path, SMALL_MODELS, tflite=False)
    for name in SMALL_MODELS:
        for rel in ("config.pbtxt", "1/model.onnx"):
            first = (repository / name / rel).read_bytes()
            second = (tmp_path / name / rel).read_bytes()
            assert first == second, f"{name}/{rel} differs between builds"


def test_existing_files_are_skipped_unless_forced(tmp_path: Path) -> None:
    mdm.build_models(tmp_path, ["cnn"], tflite=False)
    config_file = tmp_path / "cnn" / "config.pbtxt"
    model_file = tmp_path / "cnn" / "1" / "model.onnx"
    original_config = config_file.read_text()
    config_file.write_text(original_config + "# hand edit\n")
    model_file.write_bytes(b"placeholder")

    mdm.build_models(tmp_path, ["cnn"], tflite=False)
    assert config_file.read_text().endswith("# hand edit\n")
    assert model_file.read_bytes() == b"placeholder"

    mdm.build_models(tmp_path, ["cnn"], force=True, tflite=False)
    assert config_file.read_text() == original_config
    onnx.checker.check_model(onnx.load(str(model_file)))


def test_unknown_model_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="nope"):
        mdm.build_models(tmp_path, ["cnn", "nope"])
    assert not any(tmp_path.iterdir()), "nothing should be built when a name is unknown"
    with pytest.raises(SystemExit) as exc_info:
        mdm.main(["--repository", str(tmp_path), "--only", "nope"])
    assert exc_info.value.code != 0


# ---- the committed TFLite files -------------------------------------------------

COMMITTED = Path(__file__).resolve().parents[1] / "models" / "repository"


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_committed_tflite_answers_like_the_onnx_file(name: str) -> None:
    # Serving needs LiteRT only; check_tflite is the check the script itself runs.
    spec = mdm.MODELS[name]
    tflite = (COMMITTED / name / "1" / "model.tflite").read_bytes()
    assert mdm.check_tflite(spec, COMMITTED / name / "1" / "model.onnx", tflite) < 1e-5


def test_without_tensorflow_the_onnx_files_are_built_and_tflite_skipped(tmp_path: Path) -> None:
    script = (
        "import sys, runpy; sys.modules['tensorflow'] = None; "
        f"sys.argv = ['make_demo_models.py', '--repository', {str(tmp_path)!r}, '--only', 'cnn']; "
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cnn" / "1" / "model.onnx").is_file()
    assert not (tmp_path / "cnn" / "1" / "model.tflite").exists()
    assert "skipped cnn" in run.stdout and "tensorflow is not installed" in run.stdout


def test_tflite_build_reproduces_the_committed_files(tmp_path: Path) -> None:
    if not mdm.tensorflow_available():
        pytest.skip("tensorflow (the `convert` extra) is not installed; serving needs LiteRT only")
    # In a process of its own: once tensorflow is loaded, its protobuf runtime
    # crashes grpc_tools' protoc, which test_protocol_generated runs in this one.
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--repository", str(tmp_path), "--only", *SMALL_MODELS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    for name in SMALL_MODELS:
        built = (tmp_path / name / "1" / "model.tflite").read_bytes()
        assert built == (COMMITTED / name / "1" / "model.tflite").read_bytes(), name
