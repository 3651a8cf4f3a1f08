"""The peer section's pieces that need no Triton: the do-nothing floor answers what
perf_analyzer asks, the model.py written for Triton's python backend runs the ONNX
file right (driven through a stand-in for triton_python_backend_utils), the models
are the same bytes every time, and the medians, ratios, targets and the order of
turns come out as the section says."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format

from bench.peer import (
    FLOOR,
    FLOOR_MODEL,
    INFERGATE,
    LOADS,
    ROUNDS,
    ROUNDS_VARIABLE,
    TRITON,
    Comparison,
    Load,
    Sample,
    Target,
    comparison_row,
    median,
    round_order,
    rounds_setting,
)
from bench.peer_floor import floor_server
from bench.peer_models import (
    CNN64,
    MLP_SMALL,
    infergate_repository,
    model_config_text,
    write_cnn64,
    write_mlp_small,
)
from bench.peer_process import ServerProcess
from bench.peer_triton import MODEL_PY, TritonUnavailable, ensure_triton_env, triton_repository
from bench.perf_analyzer import BIN, run_perf_analyzer
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.protocol import model_config_pb2 as mc

# ---- the do-nothing floor -----------------------------------------------------------------


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with floor_server(FLOOR_MODEL, tmp_path_factory.mktemp("floor") / "floor.log") as server:
        yield server


@pytest.fixture
def stub(floor: ServerProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(floor.url) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_floor_answers_the_metadata_calls(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    name = MLP_SMALL.name
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=name)).ready
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=name))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 256])]
    assert [(t.name, list(t.shape)) for t in meta.outputs] == [("y", [-1, 10])]
    assert "1" in meta.versions
    config = stub.ModelConfig(pb.ModelConfigRequest(name=name)).config
    assert config.max_batch_size == 32
    assert list(config.input[0].dims) == [256]
    assert list(config.output[0].dims) == [10]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="other"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def _request(i: int = 0) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MLP_SMALL.name, id=f"r{i}")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 256])
    request.raw_input_contents.append(np.ones((1, 256), dtype=np.float32).tobytes())
    return request


def test_floor_answers_infer_with_a_fixed_tensor_and_counts(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    statistics = pb.ModelStatisticsRequest(name=MLP_SMALL.name)
    before = stub.ModelStatistics(statistics).model_stats[0]
    for _ in range(3):
        answer = stub.ModelInfer(_request())
        assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
            ("y", "FP32", [1, 10])
        ]
        y = np.frombuffer(answer.raw_output_contents[0], dtype=np.float32)
        assert y.shape == (10,)
    after = stub.ModelStatistics(statistics).model_stats[0]
    assert after.version == "1"  # perf_analyzer parses it as a number
    assert after.inference_stats.success.count - before.inference_stats.success.count == 3
    assert after.inference_count - before.inference_count == 3
    assert after.execution_count == 0  # no batches: rows/batch stays empty


def test_floor_streams_answers_with_each_request_id(floor: ServerProcess) -> None:
    with grpc.insecure_channel(floor.url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(_request(i) for i in range(4)))
    assert [a.infer_response.id for a in answers] == ["r0", "r1", "r2", "r3"]
    assert all(not a.error_message for a in answers)
    assert all(list(a.infer_response.outputs[0].shape) == [1, 10] for a in answers)
    assert all(len(a.infer_response.raw_output_contents[0]) == 40 for a in answers)


@pytest.mark.skipif(not (BIN / "perf_analyzer").exists(), reason="no perf_analyzer")
@pytest.mark.parametrize("streaming", [False, True])
def test_perf_analyzer_runs_against_the_floor(
    floor: ServerProcess, tmp_path: Path, streaming: bool
) -> None:
    result = run_perf_analyzer(
        floor.url,
        MLP_SMALL.name,
        tmp_path / "floor.csv",
        concurrency=2,
        window_ms=300,
        stability_pct=1000.0,
        max_trials=3,
        streaming=streaming,
    )
    assert result.throughput > 0


# ---- the model.py for Triton's python backend ------------------------------------------------


class FakeTensor:
    """triton_python_backend_utils.Tensor, as far as model.py uses it."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        assert array.flags.c_contiguous
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor]) -> None:
        self.output_tensors = output_tensors


class FakeRequest:
    def __init__(self, **inputs: np.ndarray) -> None:
        self.inputs = {name: FakeTensor(name, a) for name, a in inputs.items()}


@pytest.fixture
def fake_pb_utils(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor  # type: ignore[attr-defined]
    module.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


def _load_model_py(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("peer_model_py", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("writer", [write_mlp_small, write_cnn64], ids=["mlp_small", "cnn64"])
def test_model_py_batches_requests_and_splits_outputs(
    tmp_path: Path, fake_pb_utils: types.ModuleType, writer: Any
) -> None:
    model = MLP_SMALL if writer is write_mlp_small else CNN64
    files = {model.name: writer(tmp_path / "src" / "model.onnx")}
    repo = triton_repository(tmp_path / "triton", files, [model])
    folder = repo / model.name
    assert (folder / "1" / "model.py").read_text() == MODEL_PY
    config = mc.ModelConfig()
    text_format.Parse((folder / "config.pbtxt").read_text(), config)
    assert config.backend == "python" and config.max_batch_size == 32
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert config.instance_group[0].count == 1
    assert config.parameters["intra_op_threads"].string_value == "1"
    # Triton hands initialize() the config as JSON, parameters as {key: {string_value}}.
    config_json = {
        "name": model.name,
        "parameters": {"intra_op_threads": {"string_value": "1"}},
    }

    instance = _load_model_py(folder / "1" / "model.py").TritonPythonModel()
    instance.initialize(
        {
            "model_config": json.dumps(config_json),
            "model_repository": str(folder),
            "model_version": "1",
        }
    )
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((n, *model.input_dims)).astype(np.float32) for n in (1, 3, 2)]
    reference = ort.InferenceSession(str(files[model.name]), providers=["CPUExecutionProvider"])
    expected = [reference.run(["y"], {"x": b})[0] for b in batches]

    responses = instance.execute([FakeRequest(x=b) for b in batches])
    assert len(responses) == 3
    for response, want in zip(responses, expected, strict=True):
        (tensor,) = response.output_tensors
        assert tensor.name() == "y"
        np.testing.assert_allclose(tensor.as_numpy(), want, rtol=1e-5, atol=1e-5)
    (single,) = instance.execute([FakeRequest(x=batches[1])])
    np.testing.assert_allclose(
        single.output_tensors[0].as_numpy(), expected[1], rtol=1e-5, atol=1e-5
    )
    instance.finalize()


# ---- models and repositories -------------------------------------------------------------


def test_small_models_are_the_same_bytes_every_time(tmp_path: Path) -> None:
    for writer in (write_mlp_small, write_cnn64):
        a = writer(tmp_path / "a" / "model.onnx").read_bytes()
        b = writer(tmp_path / "b" / "model.onnx").read_bytes()
        assert a == b


def test_both_repositories_have_the_same_batching(tmp_path: Path) -> None:
    files = {MLP_SMALL.name: write_mlp_small(tmp_path / "m.onnx")}
    ours = infergate_repository(tmp_path / "ig", files, [MLP_SMALL])
    theirs = triton_repository(tmp_path / "tr", files, [MLP_SMALL])
    configs = []
    for repo in (ours, theirs):
        config = mc.ModelConfig()
        text_format.Parse((repo / MLP_SMALL.name / "config.pbtxt").read_text(), config)
        assert (repo / MLP_SMALL.name / "1" / "model.onnx").resolve() == files[
            "mlp_small"
        ].resolve()
        configs.append(config)
    for config in configs:
        assert config.max_batch_size == 32
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
        assert [list(t.dims) for t in config.input] == [[256]]
    assert configs[0].backend == "onnxruntime" and configs[1].backend == "python"
    assert "instance_group" in model_config_text(MLP_SMALL, backend="python", instances=1)


# ---- medians, ratios, targets, turns ----------------------------------------------------------


def _s(throughput: float | None, p99: float | None = 1000.0, **kw: Any) -> Sample:
    return Sample(throughput=throughput, p50_us=p99, p99_us=p99, **kw)


def test_turns_alternate_every_other_round() -> None:
    sides = [INFERGATE, TRITON, FLOOR]
    assert list(round_order(sides, 0)) == [INFERGATE, TRITON, FLOOR]
    assert list(round_order(sides, 1)) == [FLOOR, TRITON, INFERGATE]
    assert list(round_order(sides, 2)) == sides


def test_median_skips_missing_values() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None, None]) is None
    assert median([1.0, 2.0]) == 1.5


def test_ratio_is_the_median_of_each_rounds_own_ratio() -> None:
    ours = [_s(100.0, 10.0), _s(300.0, 30.0), _s(120.0, 10.0), None]
    theirs = [_s(50.0, 20.0), _s(100.0, 20.0), _s(200.0, 10.0), _s(80.0)]
    c = Comparison(ours, theirs)
    assert c.ratios == [2.0, 3.0, 0.6]  # the fourth round lacks infergate's figure
    assert c.ratio == 2.0
    assert c.p99_ratio == 1.0  # median of 0.5, 1.5, 1.0
    assert c.medians(ours)["throughput"] == 120.0
    assert c.medians(theirs)["throughput"] == 90.0
    text = c.rounds_text()
    assert text.startswith("r1 100/50 infer/s, p99 0.0/0.0 ms; r2 300/100")
    assert text.endswith("r4 -/80 infer/s, p99 -/1.0 ms")


def test_targets_pass_and_miss() -> None:
    speed = Target(1.1, p99=True)
    assert speed.verdict(Comparison([_s(120.0, 900.0)], [_s(100.0, 1000.0)])).endswith("pass")
    # Fast enough, but with a higher p99.
    assert speed.verdict(Comparison([_s(120.0, 1100.0)], [_s(100.0, 1000.0)])).endswith("miss")
    assert speed.verdict(Comparison([_s(105.0, 900.0)], [_s(100.0, 1000.0)])).endswith("miss")
    floor = Target(0.8)
    assert floor.verdict(Comparison([_s(80.0, 9e9)], [_s(100.0)])).endswith("pass")
    assert floor.verdict(Comparison([None], [_s(100.0)])) == ""


def test_rows_name_every_round_and_carry_failures() -> None:
    load = Load(MLP_SMALL, 16, False, (TRITON,), {TRITON: Target(0.8)})
    ok = comparison_row(load, TRITON, Comparison([_s(90.0), _s(85.0)], [_s(100.0), _s(100.0)]))
    assert ok["ratio"] == pytest.approx(0.875)
    assert ok["target"] == ">= 0.8x: pass"
    assert ok["rounds"].count("infer/s") == 2
    assert "error" not in ok and not ok["note"]

    failed = comparison_row(
        load, TRITON, Comparison([_s(90.0), _s(85.0)], [_s(100.0), Sample(error="boom\nmore")])
    )
    assert failed["ratio"] == pytest.approx(0.9)
    assert "round 2, triton: boom" in failed["error"]
    assert failed["note"] == "r2 triton: boom"
    assert "x/x" not in failed["rounds"] and "85/x" in failed["rounds"]

    skipped = comparison_row(load, TRITON, Comparison([_s(90.0)], [None]), skipped="no registry")
    assert "error" not in skipped and "skipped: no registry" in skipped["note"]
    assert skipped["ours_throughput"] == 90.0


def test_the_loads_are_the_issues() -> None:
    by_key = {(load.model.name, load.streaming): load for load in LOADS}
    assert by_key[("mlp_small", False)].targets[FLOOR].at_least == 0.8
    assert by_key[("mlp_small", True)].targets[TRITON].at_least == 0.8
    for name in ("cnn64", "mlp_large"):
        target = by_key[(name, False)].targets[TRITON]
        assert target.at_least == 1.1 and target.p99
    assert by_key[("mlp_large", False)].concurrency == 32
    assert by_key[("cnn64", False)].concurrency == 16


def test_rounds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ROUNDS_VARIABLE, raising=False)
    assert rounds_setting() == ROUNDS
    monkeypatch.setenv(ROUNDS_VARIABLE, "3")
    assert rounds_setting() == 3
    monkeypatch.setenv(ROUNDS_VARIABLE, "0")
    with pytest.raises(ValueError):
        rounds_setting()


def test_triton_that_cannot_be_installed_is_skipped_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the venv's folder would go")
    with pytest.raises(TritonUnavailable, match="could not create"):
        ensure_triton_env(blocker / "venv")
