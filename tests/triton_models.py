"""Triton's example model repository, rebuilt here as ONNX by our own code.

Each model mirrors one of `docs/examples/model_repository` in Triton's server
repository (names, tensors, datatypes, behaviour, and a config.pbtxt written the
way Triton's docs write them, list syntax included), so that the programs Triton's
users run against those models run unchanged against infergate:

- simple: INT32 INPUT0, INPUT1 [16] -> OUTPUT0 = sum, OUTPUT1 = difference.
- simple_int8: the same on INT8.
- simple_string: strings holding integers, cast to numbers, added and subtracted,
  and cast back to strings.
- simple_identity: BYTES [-1] -> the same (Triton's is a python-backend model).
- simple_sequence: Triton's stateless sequence model: OUTPUT = READY * (INPUT +
  START), START and READY supplied by the sequence batcher (so the first request of
  a sequence answers its input + 1, the others their input).
- simple_dyna_sequence: the same plus END * CORRID (the correlation ID, UINT64) with
  the `oldest` strategy: the last request of a sequence adds the sequence's ID.
- simple_string_dyna_sequence (from Triton's QA models, which its sequence examples
  run with -d): a running sum restarted by START, plus the correlation ID (a string
  holding an integer, CORRID TYPE_STRING) on the last request; the sum is implicit
  state kept by the gateway.
- simple_accumulator (not in Triton's repository; its implicit-state docs describe
  it): OUTPUT = the running sum of a sequence's INPUTs, restarted by START, the sum
  kept by the gateway between requests through the config's `state` block (an ONNX
  model is stateless: the state goes in as INPUT_STATE and comes out as OUTPUT_STATE).
- densenet_onnx: stands in for the image classifier: FP32 data_0 [3, 224, 224]
  reshaped to the model's [1, 3, 224, 224], fc6_1 [1, 1000, 1, 1] reshaped back to
  [1000] scores, with labels (label_filename) and a warm-up sample in its config. Its
  scores are the channel means of the image times a fixed weight matrix, so a test can
  compute the expected top classes with numpy.

`build(root)` writes them all (or those named) and returns the repository folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INT32 = TensorProto.INT32
CLASSES = 1000
IMAGE = (3, 224, 224)


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _add_sub(path: Path, elem: int, name: str, via: int | None = None) -> None:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 on [batch, 16]; through
    `via` (a cast) when the tensors are strings."""
    dims: list[int | str] = ["batch", 16]
    nodes = []
    a, b = "INPUT0", "INPUT1"
    if via is not None:
        nodes += [
            helper.make_node("Cast", ["INPUT0"], ["a"], to=via),
            helper.make_node("Cast", ["INPUT1"], ["b"], to=via),
        ]
        a, b = "a", "b"
    sums = ("sum", "diff") if via is not None else ("OUTPUT0", "OUTPUT1")
    nodes += [
        helper.make_node("Add", [a, b], [sums[0]]),
        helper.make_node("Sub", [a, b], [sums[1]]),
    ]
    if via is not None:
        nodes += [
            helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=elem),
            helper.make_node("Cast", ["diff"], ["OUTPUT1"], to=elem),
        ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, elem, dims) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, elem, dims) for n in ("OUTPUT0", "OUTPUT1")],
    )
    _save(graph, path)


def _identity(path: Path) -> None:
    dims: list[int | str] = ["batch", "n"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "simple_identity",
        [helper.make_tensor_value_info("INPUT0", TensorProto.STRING, dims)],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, dims)],
    )
    _save(graph, path)


def _sequence(path: Path, dyna: bool) -> None:
    """OUTPUT = READY * (INPUT + START [+ END * CORRID]), INT32 [batch, 1]."""
    dims: list[int | str] = ["batch", 1]
    names = ["INPUT", "START", "READY"] + (["END"] if dyna else [])
    inputs = [helper.make_tensor_value_info(n, INT32, dims) for n in names]
    nodes = [helper.make_node("Add", ["INPUT", "START"], ["started"])]
    total = "started"
    if dyna:
        inputs.append(helper.make_tensor_value_info("CORRID", TensorProto.UINT64, dims))
        nodes += [
            helper.make_node("Cast", ["CORRID"], ["corrid"], to=INT32),
            helper.make_node("Mul", ["END", "corrid"], ["ended"]),
            helper.make_node("Add", ["started", "ended"], ["total"]),
        ]
        total = "total"
    nodes.append(helper.make_node("Mul", ["READY", total], ["OUTPUT"]))
    graph = helper.make_graph(
        nodes,
        "dyna_sequence" if dyna else "sequence",
        inputs,
        [helper.make_tensor_value_info("OUTPUT", INT32, dims)],
    )
    _save(graph, path)


def _accumulator(path: Path) -> None:
    """OUTPUT_STATE = INPUT + (1 - START) * INPUT_STATE; OUTPUT = OUTPUT_STATE."""
    dims: list[int | str] = ["batch", 1]
    one = numpy_helper.from_array(np.array(1, dtype=np.int32), "one")
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["one", "START"], ["keep"]),
            helper.make_node("Mul", ["keep", "INPUT_STATE"], ["kept"]),
            helper.make_node("Add", ["INPUT", "kept"], ["OUTPUT_STATE"]),
            helper.make_node("Identity", ["OUTPUT_STATE"], ["OUTPUT"]),
        ],
        "accumulator",
        [helper.make_tensor_value_info(n, INT32, dims) for n in ("INPUT", "START", "INPUT_STATE")],
        [helper.make_tensor_value_info(n, INT32, dims) for n in ("OUTPUT", "OUTPUT_STATE")],
        initializer=[one],
    )
    _save(graph, path)


def _string_dyna(path: Path) -> None:
    """sum = INPUT + (1 - START) * INPUT_STATE (kept as OUTPUT_STATE);
    OUTPUT = READY * (sum + END * int(CORRID)), CORRID a string."""
    dims: list[int | str] = ["batch", 1]
    one = numpy_helper.from_array(np.array(1, dtype=np.int32), "one")
    names = ("INPUT", "START", "END", "READY", "INPUT_STATE")
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["one", "START"], ["keep"]),
            helper.make_node("Mul", ["keep", "INPUT_STATE"], ["kept"]),
            helper.make_node("Add", ["INPUT", "kept"], ["OUTPUT_STATE"]),
            helper.make_node("Cast", ["CORRID"], ["corrid"], to=INT32),
            helper.make_node("Mul", ["END", "corrid"], ["ended"]),
            helper.make_node("Add", ["OUTPUT_STATE", "ended"], ["total"]),
            helper.make_node("Mul", ["READY", "total"], ["OUTPUT"]),
        ],
        "string_dyna_sequence",
        [helper.make_tensor_value_info(n, INT32, dims) for n in names]
        + [helper.make_tensor_value_info("CORRID", TensorProto.STRING, dims)],
        [helper.make_tensor_value_info(n, INT32, dims) for n in ("OUTPUT", "OUTPUT_STATE")],
        initializer=[one],
    )
    _save(graph, path)


def classifier_weights() -> np.ndarray:
    """The classifier's [1000, 3] weights: class scores = weights @ channel means."""
    return np.random.default_rng(20).normal(size=(CLASSES, 3)).astype(np.float32)


def classifier_scores(image: np.ndarray) -> np.ndarray:
    """What densenet_onnx answers for a [3, 224, 224] image: [1000] scores."""
    return classifier_weights() @ image.reshape(3, -1).mean(axis=1)


def _classifier(path: Path) -> None:
    weights = classifier_weights().reshape(CLASSES, 3, 1, 1)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["data_0"], ["pooled"]),
            helper.make_node("Conv", ["pooled", "weights"], ["fc6_1"]),
        ],
        "classifier",
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, *IMAGE])],
        [helper.make_tensor_value_info("fc6_1", TensorProto.FLOAT, [1, CLASSES, 1, 1])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    _save(graph, path)


def label(index: int) -> str:
    return f"CLASS_{index:04d}"


SIMPLE_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {{
    name: "INPUT0"
    data_type: {type}
    dims: [ 16 ]
  }},
  {{
    name: "INPUT1"
    data_type: {type}
    dims: [ 16 ]
  }}
]
output [
  {{
    name: "OUTPUT0"
    data_type: {type}
    dims: [ 16 ]
  }},
  {{
    name: "OUTPUT1"
    data_type: {type}
    dims: [ 16 ]
  }}
]
"""

IDENTITY_CONFIG = """
name: "simple_identity"
platform: "onnxruntime_onnx"
max_batch_size: 8

input [
  {
    name: "INPUT0"
    data_type: TYPE_STRING
    dims: [ -1 ]
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_STRING
    dims: [ -1 ]
  }
]
"""

SEQUENCE_CONFIG = """
name: "simple_sequence"
platform: "onnxruntime_onnx"
max_batch_size: 8
sequence_batching {
  control_input [
    {
      name: "START"
      control [
        {
          kind: CONTROL_SEQUENCE_START
          int32_false_true: [ 0, 1 ]
        }
      ]
    },
    {
      name: "READY"
      control [
        {
          kind: CONTROL_SEQUENCE_READY
          int32_false_true: [ 0, 1 ]
        }
      ]
    }
  ]
}
input [
  {
    name: "INPUT"
    data_type: TYPE_INT32
    dims: [ 1 ]
  }
]
output [
  {
    name: "OUTPUT"
    data_type: TYPE_INT32
    dims: [ 1 ]
  }
]
instance_group [
  {
    kind: KIND_CPU
  }
]
"""

DYNA_SEQUENCE_CONFIG = """
name: "simple_dyna_sequence"
platform: "onnxruntime_onnx"
max_batch_size: 8
sequence_batching {
    max_sequence_idle_microseconds: 10000000
    oldest {
      max_candidate_sequences: 1024
      max_queue_delay_microseconds: 10000
    }

  control_input [
    {
      name: "START"
      control [
        {
          kind: CONTROL_SEQUENCE_START
          int32_false_true: [ 0, 1 ]
        }
      ]
    },
    {
      name: "END"
      control [
        {
          kind: CONTROL_SEQUENCE_END
          int32_false_true: [ 0, 1 ]
        }
      ]
    },
    {
      name: "READY"
      control [
        {
          kind: CONTROL_SEQUENCE_READY
          int32_false_true: [ 0, 1 ]
        }
      ]
    },
    {
      name: "CORRID"
      control [
        {
          kind: CONTROL_SEQUENCE_CORRID
          data_type: TYPE_UINT64
        }
      ]
    }
  ]
}
input [
  {
    name: "INPUT"
    data_type: TYPE_INT32
    dims: [ 1 ]
  }
]
output [
  {
    name: "OUTPUT"
    data_type: TYPE_INT32
    dims: [ 1 ]
  }
]
parameters [
  {
    key: "execute_delay_ms"
    value: { string_value: "3" }
  }
]
instance_group [
  {
    count: 2
    kind: KIND_CPU
  }
]
"""

STRING_DYNA_SEQUENCE_CONFIG = """
name: "simple_string_dyna_sequence"
platform: "onnxruntime_onnx"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  oldest { max_candidate_sequences: 4 }
  control_input [
    {
      name: "START"
      control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ]
    },
    {
      name: "END"
      control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ]
    },
    {
      name: "READY"
      control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ]
    },
    {
      name: "CORRID"
      control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ]
    }
  ]
  state [
    {
      input_name: "INPUT_STATE"
      output_name: "OUTPUT_STATE"
      data_type: TYPE_INT32
      dims: [ 1 ]
    }
  ]
}
input [
  {
    name: "INPUT"
    data_type: TYPE_INT32
    dims: [ 1 ]
  }
]
output [
  {
    name: "OUTPUT"
    data_type: TYPE_INT32
    dims: [ 1 ]
  }
]
"""

# An idle limit short enough for a test to outwait.
ACCUMULATOR_IDLE_US = 1500000
ACCUMULATOR_CONFIG = f"""
name: "simple_accumulator"
platform: "onnxruntime_onnx"
max_batch_size: 8
sequence_batching {{
  max_sequence_idle_microseconds: {ACCUMULATOR_IDLE_US}
  direct {{ }}
  control_input [
    {{
      name: "START"
      control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ]
    }}
  ]
  state [
    {{
      input_name: "INPUT_STATE"
      output_name: "OUTPUT_STATE"
      data_type: TYPE_INT32
      dims: [ 1 ]
      initial_state: {{
        data_type: TYPE_INT32
        dims: [ 1 ]
        zero_data: true
        name: "initial state"
      }}
    }}
  ]
}}
input [
  {{
    name: "INPUT"
    data_type: TYPE_INT32
    dims: [ 1 ]
  }}
]
output [
  {{
    name: "OUTPUT"
    data_type: TYPE_INT32
    dims: [ 1 ]
  }}
]
"""

CLASSIFIER_CONFIG = """
name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size : 0
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
    reshape { shape: [ 1, 3, 224, 224 ] }
  }
]
output [
  {
    name: "fc6_1"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    reshape { shape: [ 1, 1000, 1, 1 ] }
    label_filename: "densenet_labels.txt"
  }
]
model_warmup [
  {
    name: "random image"
    batch_size: 1
    inputs {
      key: "data_0"
      value: {
        data_type: TYPE_FP32
        dims: [ 3, 224, 224 ]
        random_data: true
      }
    }
  }
]
"""

MODELS = (
    "simple",
    "simple_int8",
    "simple_string",
    "simple_identity",
    "simple_sequence",
    "simple_dyna_sequence",
    "simple_string_dyna_sequence",
    "simple_accumulator",
    "densenet_onnx",
)


def build(root: Path, names: Iterable[str] = MODELS) -> Path:
    """Write the models named (all by default) into the repository `root`."""
    for name in names:
        folder = root / name
        artifact = folder / "1" / "model.onnx"
        if name == "simple":
            _add_sub(artifact, INT32, name)
            config = SIMPLE_CONFIG.format(name=name, type="TYPE_INT32")
        elif name == "simple_int8":
            _add_sub(artifact, TensorProto.INT8, name)
            config = SIMPLE_CONFIG.format(name=name, type="TYPE_INT8")
        elif name == "simple_string":
            _add_sub(artifact, TensorProto.STRING, name, via=INT32)
            config = SIMPLE_CONFIG.format(name=name, type="TYPE_STRING")
        elif name == "simple_identity":
            _identity(artifact)
            config = IDENTITY_CONFIG
        elif name == "simple_sequence":
            _sequence(artifact, dyna=False)
            config = SEQUENCE_CONFIG
        elif name == "simple_dyna_sequence":
            _sequence(artifact, dyna=True)
            config = DYNA_SEQUENCE_CONFIG
        elif name == "simple_string_dyna_sequence":
            _string_dyna(artifact)
            config = STRING_DYNA_SEQUENCE_CONFIG
        elif name == "simple_accumulator":
            _accumulator(artifact)
            config = ACCUMULATOR_CONFIG
        elif name == "densenet_onnx":
            _classifier(artifact)
            config = CLASSIFIER_CONFIG
            labels = "".join(label(i) + "\n" for i in range(CLASSES))
            (folder / "densenet_labels.txt").write_text(labels)
        else:
            raise ValueError(f"no Triton example model named {name!r}")
        (folder / "config.pbtxt").write_text(config.lstrip())
    return root
