"""Classification (infergate.gateway.core.classification), reshape and labels
(runtime_config, config_spec.reconcile), warm-up of a reshaped model, and Triton's
wording on model control, in process."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.gateway.core.classification import class_counts, classify, read_labels
from infergate.gateway.core.config_fields import unacted_fields
from infergate.gateway.core.config_spec import reconcile
from infergate.gateway.core.config_text import parse_config_text
from infergate.gateway.core.request import InferRequest
from infergate.gateway.core.runtime_config import ConfiguredModel, configured, labels_of
from infergate.gateway.server import GatewayServer
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.schema.errors import InvalidInput, ModelLoadError
from infergate.schema.tensors import ModelSpec, TensorSpec
from infergate.settings import Settings
from tests import triton_models

# ---- classification --------------------------------------------------------------


def test_top_k_strings_as_triton_writes_them() -> None:
    scores = np.array([[0.1, 0.75, 0.25, 0.75]], np.float32)
    got = classify("y", scores, 3, ["a", "", "c"], batches=True)
    # Ties: the lower index first; an empty label line (index 1) and an index past
    # the file's end (3) get no label.
    assert got.tolist() == [[b"0.750000:1", b"0.750000:3", b"0.250000:2:c"]]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint64, np.int8, np.int64, np.float16, np.float64])
def test_every_numeric_type_ranks(dtype: type) -> None:
    unsigned = np.dtype(dtype).kind == "u"
    # A large unsigned value ranks first (no wrap-around), a negative one last.
    values = np.array([3, 250 if unsigned else -5, 7], dtype=dtype)
    got = classify("y", values, 3, [], batches=False)
    if unsigned:
        assert got.tolist() == [b"250:1", b"7:2", b"3:0"]
    elif np.dtype(dtype).kind == "i":
        assert got.tolist() == [b"7:2", b"3:0", b"-5:1"]
    else:
        assert got.tolist() == [b"7.000000:2", b"3.000000:0", b"-5.000000:1"]


def test_non_batching_models_rank_the_whole_tensor() -> None:
    scores = np.array([[1.0, 5.0], [3.0, 2.0]], np.float32)
    assert classify("y", scores, 2, [], batches=False).tolist() == [b"5.000000:1", b"3.000000:2"]
    assert classify("y", scores, 1, [], batches=True).tolist() == [[b"5.000000:1"], [b"3.000000:0"]]


def test_class_counts_are_checked_before_the_run() -> None:
    spec = ModelSpec(
        inputs=(TensorSpec("x", "FP32", (-1, 2)),),
        outputs=(
            TensorSpec("y", "FP32", (-1, 10)),
            TensorSpec("s", "BYTES", (-1, 2)),
            TensorSpec("v", "FP32", (-1, -1)),
        ),
        max_batch_size=4,
    )

    def request(name: str, k: object) -> InferRequest:
        return InferRequest(
            "m", "", "", [], (name,), output_parameters={name: {"classification": k}}
        )  # type: ignore[dict-item]

    assert class_counts(request("y", 10), spec) == {"y": 10}
    assert class_counts(request("v", 99), spec) == {"v": 99}  # variable: checked on the values
    for k in (0, -1, True, "3", 1.5):
        with pytest.raises(InvalidInput, match="positive integer"):
            class_counts(request("y", k), spec)
    with pytest.raises(InvalidInput, match="11 classes"):
        class_counts(request("y", 11), spec)
    with pytest.raises(InvalidInput, match="unsupported type 'BYTES'"):
        class_counts(request("s", 1), spec)
    with pytest.raises(InvalidInput, match="99 classes"):
        classify("v", np.zeros((1, 5), np.float32), 99, [], batches=True)


def test_label_files_read_as_triton_reads_them() -> None:
    assert read_labels("a\nb\r\n\nd\n") == ("a", "b", "", "d")
    assert read_labels("a\nb") == ("a", "b")
    assert read_labels("") == ()


# ---- reshape and labels ----------------------------------------------------------


def config(text: str) -> object:
    return parse_config_text(text).config


DENSE = """
name: "d" max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3, 4 ] reshape { shape: [ 1, 12 ] } } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 12 ] reshape { shape: [ 1, 12, 1 ] }
           label_filename: "labels.txt" } ]
"""


def test_reconcile_checks_the_reshaped_shape() -> None:
    declared = reconcile(
        parse_config_text(DENSE).config,
        [TensorSpec("x", "FP32", (1, 12))],
        [TensorSpec("y", "FP32", (1, 12, 1))],
    )
    assert declared.inputs[0].shape == (3, 4)  # requests are checked against dims
    with pytest.raises(ModelLoadError, match="reshape \\[1, 12\\]"):
        reconcile(
            parse_config_text(DENSE).config,
            [TensorSpec("x", "FP32", (3, 4))],
            [TensorSpec("y", "FP32", (1, 12, 1))],
        )
    bad = DENSE.replace("shape: [ 1, 12 ]", "shape: [ 1, 13 ]")
    with pytest.raises(ModelLoadError, match="same elements"):
        reconcile(parse_config_text(bad).config, [], [])


class Doubler:
    """A runtime whose tensors have the reshaped shapes: y = 2x, [1, 12] -> [1, 12, 1]."""

    inputs = (TensorSpec("x", "FP32", (1, 12)),)
    outputs = (TensorSpec("y", "FP32", (1, 12, 1)),)
    device = "cpu"

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert inputs["x"].shape == (1, 12)
        return {"y": (inputs["x"] * 2).reshape(1, 12, 1)}

    def close(self) -> None:
        pass


def test_the_wrapper_reshapes_both_ways_and_keeps_labels(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("zero\none\n")
    runtime = configured(Doubler(), parse_config_text(DENSE).config, tmp_path)  # type: ignore[arg-type]
    assert isinstance(runtime, ConfiguredModel)
    assert runtime.inputs[0].shape == (3, 4) and runtime.outputs[0].shape == (12,)
    y = runtime.infer({"x": np.ones((3, 4), np.float32)})["y"]
    assert y.shape == (12,) and y[0] == 2
    assert labels_of(runtime) == {"y": ("zero", "one")}
    with pytest.raises(ModelLoadError, match="cannot read label_filename"):
        configured(Doubler(), parse_config_text(DENSE).config, tmp_path / "elsewhere")  # type: ignore[arg-type]
    escape = DENSE.replace('"labels.txt"', '"../labels.txt"')
    with pytest.raises(ModelLoadError, match="in the model's folder"):
        configured(Doubler(), parse_config_text(escape).config, tmp_path)  # type: ignore[arg-type]
    plain = 'name: "p" input [ { name: "x" data_type: TYPE_FP32 dims: [ 1, 12 ] } ]'
    doubler = Doubler()
    assert configured(doubler, parse_config_text(plain).config, tmp_path) is doubler  # type: ignore[arg-type]


def test_fields_now_acted_on_are_not_warned_about() -> None:
    parsed = parse_config_text(
        triton_models.CLASSIFIER_CONFIG
        + triton_models.DYNA_SEQUENCE_CONFIG.split("sequence_batching", 1)[1].join(
            ["sequence_batching", ""]
        )
    )
    assert unacted_fields(parsed.config) == [
        "input.format",
        "sequence_batching.oldest.max_candidate_sequences",
    ]


# ---- in a gateway ------------------------------------------------------------------


async def test_reshaped_model_warms_up_from_its_config(tmp_path: Path) -> None:
    repo = triton_models.build(tmp_path / "repo", ["densenet_onnx"])
    server = GatewayServer(
        Settings(metrics_port=0, model_repository=repo, port=0, use_gpu=False, insecure_admin=True)
    )
    await server.start()
    try:
        model = server.core.model("densenet_onnx")
        canary = model.arms[0].canary
        assert canary is not None  # the config's sample ran, through the reshape
        assert canary["data_0"].shape == triton_models.IMAGE and canary["data_0"].any()
        assert model.spec.inputs[0].shape == triton_models.IMAGE
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="absent"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert (caught.value.details() or "").startswith("failed to load 'absent': ")
    finally:
        await server.stop()


async def test_a_missing_label_file_fails_the_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = triton_models.build(tmp_path / "repo", ["densenet_onnx"])
    (repo / "densenet_onnx" / "densenet_labels.txt").unlink()
    server = GatewayServer(Settings(metrics_port=0, model_repository=repo, port=0, use_gpu=False))
    with caplog.at_level(logging.ERROR):
        await server.start()
    try:
        entry = server.core.registry.entry("densenet_onnx")
        assert entry.state.value == "UNAVAILABLE"
        assert "densenet_labels.txt" in entry.reason
    finally:
        await server.stop()
