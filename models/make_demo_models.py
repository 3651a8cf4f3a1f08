#!/usr/bin/env python3
"""Build the bundled demo models into a Triton-style model repository.

Every model is assembled by hand with ``onnx.helper`` from numpy arrays, so the
only build dependencies are numpy, onnx and scikit-learn (for the ``load_digits``
data that ships inside the wheel): no deep-learning framework, no network access,
no downloaded weights. Seeds are fixed, so two runs on the same machine write
byte-identical files and the committed artifacts can be checked for drift.

Models (input ``x``, output ``y``, fp32, leading symbolic dimension ``batch``):

* ``digits``    64-64-10 MLP trained here on ``load_digits``; outputs class
                probabilities. Tiny; a correctness check with a known answer.
* ``cnn``       small random-weight conv net on 3x32x32 images. Compute-bound,
                so batching requests together buys little on CPU.
* ``mlp_large`` 1024-4096-4096-1000 random-weight MLP, ~100 MB of weights.
                Memory-bound at batch 1, so batching pays off. Too large to
                commit: its model.onnx is generated on first use.

Layout written for each model::

    <repository>/<name>/config.pbtxt     Triton ModelConfig, protobuf text format
    <repository>/<name>/1/model.onnx     opset 17, IR version 8
    <repository>/<name>/1/model.tflite   digits and cnn: the same network and weights

The TFLite files are converted from a Keras twin of each network, built on the
very numpy arrays the ONNX file holds, and checked against the ONNX file's outputs.
That needs tensorflow (``pip install -e '.[convert]'``); without it the ONNX
files are still built and the TFLite ones skipped. They are committed, so that
serving and CI need only LiteRT; TFLite conversion is deterministic too.

Usage::

    python models/make_demo_models.py [--repository DIR] [--only NAME ...] [--force]

Existing files are left alone unless ``--force`` is given, which keeps ``make
models`` cheap and does not clobber a config.pbtxt someone edited by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

# Opset 17 / IR 8 is what onnx 1.12 wrote; pinning both (instead of taking the
# installed onnx's newest) lets older onnxruntime and Triton builds load the files.
OPSET = 17
IR_VERSION = 8

INPUT_NAME = "x"
OUTPUT_NAME = "y"
BATCH_DIM = "batch"
MODEL_VERSION = "1"
MODEL_FILENAME = "model.onnx"
CONFIG_FILENAME = "config.pbtxt"
PRODUCER_NAME = "infergate/models/make_demo_models.py"

# Resolved against this file, not the cwd, so the script works from anywhere.
DEFAULT_REPOSITORY = Path(__file__).resolve().parent / "repository"

# load_digits is ordered; a fixed split (rather than a shuffled one) keeps the
# reported test accuracy reproducible without carrying a seed around.
DIGITS_TRAIN_SAMPLES = 1500

FloatArray = npt.NDArray[np.float32]
LabelArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ModelSpec:
    """What config.pbtxt declares about a model, plus how to build its graph."""

    name: str
    max_batch_size: int
    input_dims: tuple[int, ...]  # per-request shape, without the batch dimension
    output_dims: tuple[int, ...]
    build: Callable[[ModelSpec], onnx.ModelProto]
    # The same network and weights as a Keras model, for model.tflite; None: no TFLite.
    keras: Callable[[ModelSpec], Any] | None = None
    # Dynamic batching: how long the oldest request may wait for company.
    queue_delay_us: int = 1000
    response_cache: bool = False


# ---------------------------------------------------------------------------
# Graph helpers
# ---------------------------------------------------------------------------


def _initializer(name: str, array: npt.NDArray[np.floating]) -> TensorProto:
    # Everything the gateway serves is fp32; cast here so a float64 training
    # result can never leak a double tensor into a graph.
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name=name)


def _make_model(
    spec: ModelSpec,
    nodes: Sequence[onnx.NodeProto],
    initializers: Sequence[TensorProto],
    doc_string: str,
) -> onnx.ModelProto:
    """Wrap nodes into a checked model with the repository-wide conventions."""
    graph = helper.make_graph(
        list(nodes),
        spec.name,
        inputs=[
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, *spec.input_dims]
            )
        ],
        outputs=[
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, *spec.output_dims]
            )
        ],
        initializer=list(initializers),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER_NAME,
        # Deliberately not the onnx version: the bytes should depend only on
        # this script, so upgrading onnx does not dirty the committed models.
        producer_version="1",
        model_version=int(MODEL_VERSION),
        doc_string=doc_string,
    )
    # full_check runs shape inference too, which catches a wrong weight shape
    # here rather than as a confusing load error in the gateway.
    onnx.checker.check_model(model, full_check=True)
    return model


def _gemm_layer(
    prefix: str, source: str, weight: FloatArray, bias: FloatArray, relu: bool
) -> tuple[list[onnx.NodeProto], list[TensorProto], str]:
    """Gemm(source, W[in,out], b), optionally followed by Relu.

    Returns the nodes, their initializers and the name of the output tensor.
    """
    w_name, b_name, out = f"{prefix}.weight", f"{prefix}.bias", f"{prefix}.out"
    nodes = [helper.make_node("Gemm", [source, w_name, b_name], [out], name=f"{prefix}.gemm")]
    if relu:
        nodes.append(helper.make_node("Relu", [out], [f"{prefix}.relu"], name=f"{prefix}.relu"))
        out = f"{prefix}.relu"
    return nodes, [_initializer(w_name, weight), _initializer(b_name, bias)], out


def _he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> FloatArray:
    # He init keeps the activation scale roughly constant through ReLU layers,
    # so random-weight models produce finite, moderate outputs at any depth.
    # Generating float32 directly (and scaling in place) avoids a float64
    # temporary twice the size, which matters for the 64 MB mlp_large layer.
    weights = rng.standard_normal(shape, dtype=np.float32)
    weights *= np.float32(np.sqrt(2.0 / fan_in))
    return weights


# ---------------------------------------------------------------------------
# digits: MLP trained on sklearn's bundled load_digits
# ---------------------------------------------------------------------------

DIGITS_HIDDEN = 64
DIGITS_SEED = 0
# Full-batch gradient descent with momentum: deterministic (no minibatch
# shuffling) and under a second on 1500 samples. The held-out tail of the data
# set is harder than the head: training accuracy reaches ~1.0 while test
# accuracy plateaus near 0.92-0.93 whatever the step count; light weight decay
# helps a little.
DIGITS_STEPS = 300
DIGITS_LEARNING_RATE = 0.3
DIGITS_MOMENTUM = 0.9
DIGITS_WEIGHT_DECAY = 1e-3


def load_digits_split() -> tuple[FloatArray, LabelArray, FloatArray, LabelArray]:
    """Return (x_train, y_train, x_test, y_test): 64 features in [0, 1], labels 0-9.

    Public so tests can score the exported model on exactly the held-out split.
    """
    from sklearn.datasets import load_digits  # imported lazily: only digits needs it

    digits = load_digits()
    # Pixels are 0..16 intensities; the served model takes them divided by 16.
    features = (np.asarray(digits.data, dtype=np.float64) / 16.0).astype(np.float32)
    labels = np.asarray(digits.target, dtype=np.int64)
    n = DIGITS_TRAIN_SAMPLES
    return features[:n], labels[:n], features[n:], labels[n:]


def _train_digits_mlp(
    x: FloatArray, labels: LabelArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Train 64-H-10 ReLU MLP with softmax cross-entropy; return fp32 (w1, b1, w2, b2)."""
    rng = np.random.default_rng(DIGITS_SEED)
    n_features, n_classes = x.shape[1], 10
    # Train in float64 so the result is less sensitive to summation order
    # (BLAS threading) and only round to float32 once, at export.
    xs = x.astype(np.float64)
    w1 = rng.standard_normal((n_features, DIGITS_HIDDEN)) * np.sqrt(2.0 / n_features)
    b1 = np.zeros(DIGITS_HIDDEN)
    w2 = rng.standard_normal((DIGITS_HIDDEN, n_classes)) * np.sqrt(1.0 / DIGITS_HIDDEN)
    b2 = np.zeros(n_classes)
    params = [w1, b1, w2, b2]
    velocity = [np.zeros_like(p) for p in params]
    onehot = np.eye(n_classes)[labels]
    n = xs.shape[0]

    for _ in range(DIGITS_STEPS):
        pre = xs @ w1 + b1
        hidden = np.maximum(pre, 0.0)
        logits = hidden @ w2 + b2
        logits -= logits.max(axis=1, keepdims=True)  # stable softmax
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)

        # Gradient of mean cross-entropy w.r.t. logits is (p - onehot) / n.
        d_logits = (probs - onehot) / n
        d_hidden = d_logits @ w2.T
        d_hidden[pre <= 0.0] = 0.0
        grads = [
            xs.T @ d_hidden + DIGITS_WEIGHT_DECAY * w1,
            d_hidden.sum(axis=0),
            hidden.T @ d_logits + DIGITS_WEIGHT_DECAY * w2,
            d_logits.sum(axis=0),
        ]
        for param, vel, grad in zip(params, velocity, grads, strict=True):
            vel *= DIGITS_MOMENTUM
            vel -= DIGITS_LEARNING_RATE * grad
            param += vel

    w1_32, b1_32, w2_32, b2_32 = (p.astype(np.float32) for p in params)
    return w1_32, b1_32, w2_32, b2_32


def _digits_accuracy(
    weights: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    x: FloatArray,
    labels: LabelArray,
) -> float:
    # Same float32 forward pass the ONNX graph computes (softmax does not move
    # the argmax, so it is skipped).
    w1, b1, w2, b2 = weights
    logits = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    return float(np.mean(logits.argmax(axis=1) == labels))


@functools.cache
def digits_weights() -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The trained (w1, b1, w2, b2), computed once per process: the ONNX and TFLite
    files are built from these very arrays."""
    x_train, y_train, _, _ = load_digits_split()
    return _train_digits_mlp(x_train, y_train)


def build_digits(spec: ModelSpec) -> onnx.ModelProto:
    _, _, x_test, y_test = load_digits_split()
    weights = digits_weights()
    accuracy = _digits_accuracy(weights, x_test, y_test)
    w1, b1, w2, b2 = weights

    nodes, inits, hidden = _gemm_layer("fc1", INPUT_NAME, w1, b1, relu=True)
    fc2_nodes, fc2_inits, logits = _gemm_layer("fc2", hidden, w2, b2, relu=False)
    nodes += fc2_nodes
    inits += fc2_inits
    nodes.append(helper.make_node("Softmax", [logits], [OUTPUT_NAME], name="softmax", axis=1))

    doc = (
        "Handwritten digit classifier: 64-64-10 ReLU MLP trained with numpy on "
        "scikit-learn load_digits. Input x [batch,64]: the 8x8 image flattened row-major, "
        f"pixel values divided by 16 (range [0,1]). Output y [batch,10]: class probabilities "
        f"(softmax). Trained on samples 0-{DIGITS_TRAIN_SAMPLES - 1}; accuracy on samples "
        f"{DIGITS_TRAIN_SAMPLES}-{DIGITS_TRAIN_SAMPLES + len(y_test) - 1}: {accuracy:.4f}."
    )
    return _make_model(spec, nodes, inits, doc)


# ---------------------------------------------------------------------------
# cnn: small random-weight conv net (compute-bound)
# ---------------------------------------------------------------------------

CNN_SEED = 1


# (name, out channels) for each 3x3 conv; a 2x2 max pool follows conv2. About 29 M
# multiply-adds per 32x32 image against only ~230 KB of weights, which is what
# makes this model compute-bound.
CNN_CONVS = (("conv1", 32), ("conv2", 64), ("conv3", 64))


@functools.cache
def cnn_weights(in_channels: int, classes: int) -> dict[str, FloatArray]:
    """Weights by ONNX initializer name (conv weights [out, in, 3, 3], fc [in, out]),
    made once per process so that the ONNX and TFLite files share them."""
    rng = np.random.default_rng(CNN_SEED)
    weights: dict[str, FloatArray] = {}
    c_in = in_channels
    for name, c_out in CNN_CONVS:
        weights[f"{name}.weight"] = _he_normal(rng, (c_out, c_in, 3, 3), fan_in=c_in * 9)
        weights[f"{name}.bias"] = np.zeros(c_out, dtype=np.float32)
        c_in = c_out
    # Plain 1/fan_in variance for the linear head: no ReLU follows it.
    head_w = rng.standard_normal((c_in, classes), dtype=np.float32)
    head_w *= np.float32(np.sqrt(1.0 / c_in))
    weights["fc.weight"] = head_w
    weights["fc.bias"] = np.zeros(classes, dtype=np.float32)
    return weights


def build_cnn(spec: ModelSpec) -> onnx.ModelProto:
    weights = cnn_weights(spec.input_dims[0], spec.output_dims[0])
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    current = INPUT_NAME
    for name, _ in CNN_CONVS:
        w_name, b_name = f"{name}.weight", f"{name}.bias"
        inits += [_initializer(w_name, weights[w_name]), _initializer(b_name, weights[b_name])]
        nodes.append(
            helper.make_node(
                "Conv",
                [current, w_name, b_name],
                [f"{name}.out"],
                name=name,
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],  # "same" padding: keeps HxW
            )
        )
        nodes.append(
            helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"], name=f"{name}.relu")
        )
        current = f"{name}.relu"
        if name == "conv2":
            nodes.append(
                helper.make_node(
                    "MaxPool", [current], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
                )
            )
            current = "pool"

    nodes.append(helper.make_node("GlobalAveragePool", [current], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    head_nodes, head_inits, _ = _gemm_layer(
        "fc", "flat", weights["fc.weight"], weights["fc.bias"], relu=False
    )
    # Rename the head's output to the graph output instead of adding an Identity.
    head_nodes[0].output[0] = OUTPUT_NAME
    nodes += head_nodes
    inits += head_inits

    doc = (
        "Demo convolutional network with random (seeded, He-initialised) weights; its "
        "outputs mean nothing. Input x [batch,3,32,32], output y [batch,10] logits. "
        "Conv3x3(3->32)+Relu, Conv3x3(32->64)+Relu, MaxPool2x2, Conv3x3(64->64)+Relu, "
        "GlobalAveragePool, Gemm(64->10). Compute-bound: batching gains little on CPU."
    )
    return _make_model(spec, nodes, inits, doc)


# ---------------------------------------------------------------------------
# mlp_large: weight-heavy random MLP (memory-bound at batch 1)
# ---------------------------------------------------------------------------

MLP_LARGE_SEED = 2
MLP_LARGE_HIDDEN = (4096, 4096)


def build_mlp_large(spec: ModelSpec) -> onnx.ModelProto:
    rng = np.random.default_rng(MLP_LARGE_SEED)
    widths = [spec.input_dims[0], *MLP_LARGE_HIDDEN, spec.output_dims[0]]

    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    current = INPUT_NAME
    last = len(widths) - 2
    # One layer at a time: each weight array is turned into its TensorProto and
    # then dropped, so no numpy copy of the whole model is ever held. (Protobuf
    # still copies the tensors while assembling, checking and serialising the
    # model; the build peaks around 750 MB RSS.)
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        is_last = i == last
        weight = _he_normal(rng, (fan_in, fan_out), fan_in)
        if is_last:
            # No ReLU after the head: 1/fan_in variance keeps logits around unit scale.
            weight *= np.float32(np.sqrt(0.5))
        layer_nodes, layer_inits, current = _gemm_layer(
            f"fc{i + 1}", current, weight, np.zeros(fan_out, dtype=np.float32), relu=not is_last
        )
        del weight
        nodes += layer_nodes
        inits += layer_inits
    nodes[-1].output[0] = OUTPUT_NAME

    n_params = sum(a * b + b for a, b in itertools.pairwise(widths))
    doc = (
        "Demo weight-heavy MLP with random (seeded, He-initialised) weights; its outputs "
        f"mean nothing. {'-'.join(map(str, widths))} with ReLU between layers, "
        f"{n_params:,} fp32 parameters (~{n_params * 4 / 1e6:.0f} MB). Input x "
        f"[batch,{widths[0]}], output y [batch,{widths[-1]}]. Memory-bound at batch 1: "
        "every request streams all weights, so batching multiplies throughput."
    )
    return _make_model(spec, nodes, inits, doc)


# ---------------------------------------------------------------------------
# TFLite: the same networks and weights through Keras (optional: tensorflow)
# ---------------------------------------------------------------------------

TFLITE_FILENAME = "model.tflite"
# fp32 kernels sum in different orders in different runtimes (~1e-6 apart here);
# a real difference in the network is orders of magnitude above this.
TFLITE_TOLERANCE = 1e-4
TFLITE_CHECK_SEED = 3
TFLITE_CHECK_ROWS = 8


def tensorflow_available() -> bool:
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ValueError:  # present in sys.modules but not importable
        return False


def keras_digits(spec: ModelSpec) -> Any:
    """digits as a Keras model: Dense+ReLU, Dense+softmax, on digits_weights()."""
    import keras

    w1, b1, w2, b2 = digits_weights()
    x = keras.Input(shape=spec.input_dims, name=INPUT_NAME)
    fc1 = keras.layers.Dense(w1.shape[1], activation="relu", name="fc1")
    fc2 = keras.layers.Dense(w2.shape[1], activation="softmax", name="fc2")
    model = keras.Model(x, fc2(fc1(x)), name=spec.name)
    fc1.set_weights([w1, b1])
    fc2.set_weights([w2, b2])
    return model


def keras_cnn(spec: ModelSpec) -> Any:
    """cnn as a Keras model on cnn_weights(), taking the same NCHW input as the ONNX one."""
    import keras

    weights = cnn_weights(spec.input_dims[0], spec.output_dims[0])
    x = keras.Input(shape=spec.input_dims, name=INPUT_NAME)
    # TFLite convolves NHWC only; transposing inside the graph keeps the served
    # input NCHW, so both files answer the same request.
    current = keras.layers.Permute((2, 3, 1), name="to_nhwc")(x)
    for name, c_out in CNN_CONVS:
        conv = keras.layers.Conv2D(c_out, 3, padding="same", activation="relu", name=name)
        current = conv(current)
        # ONNX [out, in, kh, kw] -> Keras [kh, kw, in, out]; both cross-correlate.
        conv.set_weights([weights[f"{name}.weight"].transpose(2, 3, 1, 0), weights[f"{name}.bias"]])
        if name == "conv2":
            current = keras.layers.MaxPooling2D(2, name="pool")(current)
    current = keras.layers.GlobalAveragePooling2D(name="gap")(current)
    fc = keras.layers.Dense(spec.output_dims[0], name="fc")
    model = keras.Model(x, fc(current), name=spec.name)
    fc.set_weights([weights["fc.weight"], weights["fc.bias"]])
    return model


def build_tflite(spec: ModelSpec) -> bytes:
    """Convert the model's Keras twin to TFLite (fp32, variable batch dimension).

    Its tensors get Keras' names (`serving_default_x:0`, `StatefulPartitionedCall_1:0`,
    signature names `x` and `output_0`), as any Keras export would; the gateway maps
    the config's `x` and `y` onto them (infergate/backends/names.py).
    """
    assert spec.keras is not None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    import tensorflow as tf

    model = spec.keras(spec)
    # Keras prints where it put its temporary SavedModel: not news to our user.
    with contextlib.redirect_stdout(io.StringIO()):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        return bytes(converter.convert())


def check_tflite(spec: ModelSpec, onnx_file: Path, tflite: bytes) -> float:
    """Max |difference| between the two files' outputs on random input; raises if too big."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(TFLITE_CHECK_SEED).random(
        (TFLITE_CHECK_ROWS, *spec.input_dims), dtype=np.float32
    )
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (expected,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    interpreter = Interpreter(model_content=tflite)
    (given,) = interpreter.get_input_details()
    (answer,) = interpreter.get_output_details()
    interpreter.resize_tensor_input(given["index"], x.shape, strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    difference = float(np.max(np.abs(interpreter.get_tensor(answer["index"]) - expected)))
    if not difference <= TFLITE_TOLERANCE:
        raise RuntimeError(
            f"{spec.name}: the TFLite file differs from the ONNX one by {difference:.3g} "
            f"(tolerance {TFLITE_TOLERANCE})"
        )
    return difference


# ---------------------------------------------------------------------------
# Repository
# ---------------------------------------------------------------------------

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # A classifier asked the same questions again and again: cache its answers.
        ModelSpec("digits", 64, (64,), (10,), build_digits, keras_digits, response_cache=True),
        ModelSpec("cnn", 32, (3, 32, 32), (10,), build_cnn, keras_cnn),
        ModelSpec("mlp_large", 32, (1024,), (1000,), build_mlp_large, queue_delay_us=2000),
    )
}


def render_config(spec: ModelSpec) -> str:
    """Triton ModelConfig in protobuf text format.

    dims exclude the batch dimension, as Triton expects when max_batch_size > 0.
    No backend is pinned: the model runs on every installed backend that loads one
    of its artifacts, and the router picks the fastest for each batch.
    """

    def tensor(name: str, dims: tuple[int, ...]) -> list[str]:
        return [
            "  {",
            f'    name: "{name}"',
            "    data_type: TYPE_FP32",
            f"    dims: [ {', '.join(map(str, dims))} ]",
            "  }",
        ]

    lines = [
        "# Generated by models/make_demo_models.py; edit the script, not this file.",
        f'name: "{spec.name}"',
        f"max_batch_size: {spec.max_batch_size}",
        "input [",
        *tensor(INPUT_NAME, spec.input_dims),
        "]",
        "output [",
        *tensor(OUTPUT_NAME, spec.output_dims),
        "]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {spec.queue_delay_us} }}",
    ]
    if spec.response_cache:
        lines.append("response_cache { enable: true }")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, data: bytes) -> None:
    # Write-then-rename: an interrupted build must not leave a truncated
    # model.onnx behind, because the next run would skip it as "already built".
    # A plain open() (not tempfile.mkstemp) so the file gets the usual
    # umask-based permissions instead of 0600.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            out.write(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def model_path(repository: Path, name: str) -> Path:
    return repository / name / MODEL_VERSION / MODEL_FILENAME


def tflite_path(repository: Path, name: str) -> Path:
    return repository / name / MODEL_VERSION / TFLITE_FILENAME


def config_path(repository: Path, name: str) -> Path:
    return repository / name / CONFIG_FILENAME


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def build_models(
    repository: Path,
    names: Iterable[str] | None = None,
    force: bool = False,
    tflite: bool = True,
) -> list[Path]:
    """Build the named models (default: all) into ``repository``.

    config.pbtxt, model.onnx and (for models that have one, when ``tflite`` and
    tensorflow is installed) model.tflite are each skipped when they already
    exist, unless ``force``. Returns the model.onnx path of every requested model,
    in the order requested, whether it was built now or already present. Prints
    one line per file. Raises KeyError for an unknown name before building anything.
    """
    selected = list(MODELS) if names is None else list(dict.fromkeys(names))
    unknown = [name for name in selected if name not in MODELS]
    if unknown:
        raise KeyError(f"unknown model(s) {unknown}; known: {sorted(MODELS)}")

    paths: list[Path] = []
    for name in selected:
        spec = MODELS[name]
        cfg, onnx_file = config_path(repository, name), model_path(repository, name)
        if force or not cfg.exists():
            _write_atomic(cfg, render_config(spec).encode())
        if force or not onnx_file.exists():
            start = time.perf_counter()
            data = spec.build(spec).SerializeToString()
            _write_atomic(onnx_file, data)
            _report("built", name, onnx_file, len(data), f"{time.perf_counter() - start:6.2f} s")
        else:
            _report(
                "exists", name, onnx_file, onnx_file.stat().st_size, "(skipped; --force rebuilds)"
            )
        if tflite and spec.keras is not None:
            _build_tflite_file(spec, repository, onnx_file, force)
        paths.append(onnx_file)
    return paths


def _build_tflite_file(spec: ModelSpec, repository: Path, onnx_file: Path, force: bool) -> None:
    path = tflite_path(repository, spec.name)
    if path.exists() and not force:
        _report("exists", spec.name, path, path.stat().st_size, "(skipped; --force rebuilds)")
        return
    if not tensorflow_available():
        print(
            f"skipped {spec.name:<10} {_display(path)}  tensorflow is not installed "
            "(pip install -e '.[convert]'); serving needs only LiteRT",
            flush=True,
        )
        return
    start = time.perf_counter()
    data = build_tflite(spec)
    difference = check_tflite(spec, onnx_file, data)
    _write_atomic(path, data)
    _report(
        "built",
        spec.name,
        path,
        len(data),
        f"{time.perf_counter() - start:6.2f} s  (max |tflite - onnx| {difference:.1g})",
    )


def _report(what: str, name: str, path: Path, size: int, note: str) -> None:
    print(f"{what:<7} {name:<10} {_display(path)}  {size / 1e6:8.2f} MB  {note}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--repository",
        type=Path,
        default=DEFAULT_REPOSITORY,
        help=f"model repository to write into (default: {_display(DEFAULT_REPOSITORY)})",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(MODELS),
        metavar="NAME",
        help=f"build only these models (of: {', '.join(MODELS)})",
    )
    parser.add_argument("--force", action="store_true", help="rebuild files that already exist")
    args = parser.parse_args(argv)

    try:
        build_models(args.repository, args.only, force=args.force)
    except Exception as exc:  # report any failure as one readable line and a non-zero exit
        print(f"make_demo_models: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
