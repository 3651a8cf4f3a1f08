"""Tiny ONNX models that tests build on the fly, each exercising one thing."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

# Protocol datatype -> ONNX element type, for the identity model.
ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
    "BF16": TensorProto.BFLOAT16,
}


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def identity_model(path: Path, datatype: str, dims: tuple[int | str, ...] = ("batch", 3)) -> Path:
    """out = in, for one datatype; shapes with a variable batch dimension."""
    elem = ONNX_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["in"], ["out"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("in", elem, list(dims))],
        [helper.make_tensor_value_info("out", elem, list(dims))],
    )
    return _save(graph, path)


def add_model(path: Path) -> Path:
    """sum = a + b and diff = a - b, FP32 [batch, 4]: two inputs, two outputs."""
    dims: list[int | str] = ["batch", 4]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Sub", ["a", "b"], ["diff"]),
        ],
        "add_sub",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, dims),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, dims),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, dims),
            helper.make_tensor_value_info("diff", TensorProto.FLOAT, dims),
        ],
    )
    return _save(graph, path)


def poisonable_model(path: Path) -> Path:
    """y = x, FP32 [batch, 4], through a Reshape whose shape comes from the values.

    The inner shape is [-1, k] with k = int(max(x)): for inputs in [0, 1] (k <= 1) the
    model is an identity; a batch holding a value like 1000.0 makes onnxruntime fail
    ("cannot be reshaped") whenever its element count does not divide by 1000. The
    runtime failing because of one request's values, as a hostile client would arrange.
    """
    dims: list[int | str] = ["batch", 4]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
            helper.make_node("Max", ["top", "one"], ["k_float"]),
            helper.make_node("Cast", ["k_float"], ["k"], to=TensorProto.INT64),
            helper.make_node("Unsqueeze", ["k", "axis0"], ["k1"]),
            helper.make_node("Concat", ["minus_one", "k1"], ["inner_shape"], axis=0),
            helper.make_node("Reshape", ["x", "inner_shape"], ["inner"]),
            helper.make_node("Reshape", ["inner", "outer_shape"], ["y"]),
        ],
        "poisonable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        initializer=[
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("outer_shape", TensorProto.INT64, [2], [-1, 4]),
            helper.make_tensor("axis0", TensorProto.INT64, [1], [0]),
        ],
    )
    return _save(graph, path)


def fails_on_zeros_model(path: Path) -> Path:
    """y = x, FP32 [batch, 4], through a Reshape to [-1, int(min(x)) + 3]: all-zero
    inputs (the gateway's synthetic warm-up) make the runtime fail (4 elements a row
    do not divide by 3), x = 1.0 passes."""
    dims: list[int | str] = ["batch", 4]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMin", ["x"], ["low"], keepdims=0),
            helper.make_node("Cast", ["low"], ["k0"], to=TensorProto.INT64),
            helper.make_node("Add", ["k0", "three"], ["k"]),
            helper.make_node("Unsqueeze", ["k", "axis0"], ["k1"]),
            helper.make_node("Concat", ["minus_one", "k1"], ["inner_shape"], axis=0),
            helper.make_node("Reshape", ["x", "inner_shape"], ["inner"]),
            helper.make_node("Reshape", ["inner", "outer_shape"], ["y"]),
        ],
        "fails_on_zeros",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        initializer=[
            helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("outer_shape", TensorProto.INT64, [2], [-1, 4]),
            helper.make_tensor("axis0", TensorProto.INT64, [1], [0]),
            helper.make_tensor("three", TensorProto.INT64, [], [3]),
        ],
    )
    return _save(graph, path)
