"""The peer section's models, and the repositories that serve them on each side.

Three models, the same files on both sides (bench/peer.py):

- `mlp_small`: 256-512-10 MLP (~137 K weights): a call costs a few microseconds, so
  its throughput is the front end's (gRPC, request handling), not the runtime's;
- `cnn64`: a small conv net on 3x64x64 images (~11 M multiply-adds per image):
  compute-bound, as a real vision model on a CPU;
- `mlp_large`: the demo repository's 1024-4096-4096-1000 MLP (~100 MB of weights):
  memory-bound at batch 1, so batching multiplies throughput.

The two small ones are written here from numpy with fixed seeds (the same bytes every
run); mlp_large is taken from the model repository (built by
models/make_demo_models.py when its model.onnx is missing).

Both sides get the same batching: `max_batch_size: 32` and a dynamic batcher with a
2000 us queue delay (bench/serve_settings.py). infergate's twin is pinned to
onnxruntime; Triton's runs onnxruntime inside its python backend (bench/peer_triton.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.config import ROOT
from bench.progress import log
from bench.serve_settings import MAX_BATCH_SIZE, QUEUE_DELAY_US

INPUT = "x"
OUTPUT = "y"
ARTIFACT = "model.onnx"
VERSION = "1"
OPSET = 17
IR_VERSION = 8

FloatArray = npt.NDArray[np.float32]


class PeerModelError(RuntimeError):
    """A model could not be built or found."""


@dataclass(frozen=True)
class PeerModel:
    """One model both servers serve: FP32 `x` in, FP32 `y` out, a variable batch."""

    name: str
    input_dims: tuple[int, ...]  # without the batch dimension
    output_dims: tuple[int, ...]
    what: str


MLP_SMALL = PeerModel(
    "mlp_small", (256,), (10,), "256-512-10 MLP, random weights: a call costs microseconds"
)
CNN64 = PeerModel(
    "cnn64",
    (3, 64, 64),
    (10,),
    "conv net on 3x64x64 (conv 3-16, pool, conv 16-32, pool, conv 32-64, global average "
    "pool, 64-10), random weights: compute-bound",
)
MLP_LARGE = PeerModel(
    "mlp_large", (1024,), (1000,), "1024-4096-4096-1000 MLP, ~100 MB of weights: memory-bound"
)
MODELS: tuple[PeerModel, ...] = (MLP_SMALL, CNN64, MLP_LARGE)

MLP_SMALL_SEED = 21
CNN64_SEED = 22
# (name, out channels, max pool after it)
CNN64_CONVS = (("conv1", 16, True), ("conv2", 32, True), ("conv3", 64, False))


# ---- ONNX from numpy --------------------------------------------------------------------


def _he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> FloatArray:
    weights = rng.standard_normal(shape, dtype=np.float32)
    weights *= np.float32(np.sqrt(2.0 / fan_in))
    return weights


def _save(
    path: Path, model: PeerModel, nodes: list[object], weights: Mapping[str, FloatArray]
) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,  # type: ignore[arg-type]
        model.name,
        inputs=[
            helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", *model.input_dims])
        ],
        outputs=[
            helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", *model.output_dims])
        ],
        initializer=[numpy_helper.from_array(w, name=n) for n, w in weights.items()],
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="infergate/bench/peer_models.py",
        producer_version="1",
    )
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(proto.SerializeToString())
    tmp.replace(path)
    return path


def write_mlp_small(path: Path) -> Path:
    """256-512-10: Gemm + Relu, Gemm."""
    from onnx import helper

    rng = np.random.default_rng(MLP_SMALL_SEED)
    widths = (MLP_SMALL.input_dims[0], 512, MLP_SMALL.output_dims[0])
    weights: dict[str, FloatArray] = {}
    nodes: list[object] = []
    current = INPUT
    for i in range(len(widths) - 1):
        fan_in, fan_out = widths[i], widths[i + 1]
        w, b = f"fc{i + 1}.weight", f"fc{i + 1}.bias"
        weights[w] = _he_normal(rng, (fan_in, fan_out), fan_in)
        weights[b] = np.zeros(fan_out, dtype=np.float32)
        last = i == len(widths) - 2
        out = OUTPUT if last else f"fc{i + 1}.out"
        nodes.append(helper.make_node("Gemm", [current, w, b], [out], name=f"fc{i + 1}"))
        current = out
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"fc{i + 1}.relu"]))
            current = f"fc{i + 1}.relu"
    return _save(path, MLP_SMALL, nodes, weights)


def write_cnn64(path: Path) -> Path:
    """3x64x64: three 3x3 convs (same padding) with Relu, 2x2 max pools after the
    first two, global average pool, a 64-10 head."""
    from onnx import helper

    rng = np.random.default_rng(CNN64_SEED)
    weights: dict[str, FloatArray] = {}
    nodes: list[object] = []
    current, c_in = INPUT, CNN64.input_dims[0]
    for name, c_out, pool in CNN64_CONVS:
        w, b = f"{name}.weight", f"{name}.bias"
        weights[w] = _he_normal(rng, (c_out, c_in, 3, 3), c_in * 9)
        weights[b] = np.zeros(c_out, dtype=np.float32)
        nodes.append(
            helper.make_node(
                "Conv",
                [current, w, b],
                [f"{name}.out"],
                name=name,
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
            )
        )
        nodes.append(helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"]))
        current, c_in = f"{name}.relu", c_out
        if pool:
            nodes.append(
                helper.make_node(
                    "MaxPool", [current], [f"{name}.pool"], kernel_shape=[2, 2], strides=[2, 2]
                )
            )
            current = f"{name}.pool"
    nodes.append(helper.make_node("GlobalAveragePool", [current], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    head = rng.standard_normal((c_in, CNN64.output_dims[0]), dtype=np.float32)
    head *= np.float32(np.sqrt(1.0 / c_in))
    weights["fc.weight"] = head
    weights["fc.bias"] = np.zeros(CNN64.output_dims[0], dtype=np.float32)
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], [OUTPUT], name="fc"))
    return _save(path, CNN64, nodes, weights)


WRITERS: dict[str, Callable[[Path], Path]] = {
    MLP_SMALL.name: write_mlp_small,
    CNN64.name: write_cnn64,
}


def mlp_large_path(repository: Path) -> Path:
    """mlp_large's model.onnx in `repository`, built by models/make_demo_models.py if
    missing (about a minute and 750 MB of memory, once)."""
    path = repository / MLP_LARGE.name / VERSION / ARTIFACT
    if path.is_file():
        return path
    script = ROOT / "models" / "make_demo_models.py"
    log(f"  {path} is missing: building it ({script.name} --only mlp_large)")
    proc = subprocess.run(
        [sys.executable, str(script), "--repository", str(repository), "--only", MLP_LARGE.name],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0 or not path.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise PeerModelError(f"could not build {path} (exit {proc.returncode}): {tail}")
    return path


def model_files(
    workdir: Path, repository: Path, models: Sequence[PeerModel] = MODELS
) -> dict[str, Path]:
    """Each model's ONNX file: the small ones written under `workdir`, mlp_large from
    `repository`. PeerModelError names the first that fails."""
    files: dict[str, Path] = {}
    for model in models:
        if model.name == MLP_LARGE.name:
            files[model.name] = mlp_large_path(repository)
            continue
        try:
            files[model.name] = WRITERS[model.name](workdir / model.name / ARTIFACT)
        except Exception as exc:  # an onnx checker failure says what is wrong
            raise PeerModelError(f"{model.name}: {exc}") from exc
    return files


# ---- configs ----------------------------------------------------------------------------


def model_config_text(
    model: PeerModel,
    *,
    backend: str,
    parameters: Mapping[str, str] | None = None,
    instances: int | None = None,
    header: str = "",
) -> str:
    """A Triton-format config.pbtxt (infergate reads the same format) with the
    section's batching: max_batch_size MAX_BATCH_SIZE, a QUEUE_DELAY_US queue delay."""
    from google.protobuf import text_format

    from infergate.protocol import model_config_pb2 as mc

    config = mc.ModelConfig(name=model.name, backend=backend, max_batch_size=MAX_BATCH_SIZE)
    if backend == "onnxruntime":
        config.platform = "onnxruntime_onnx"
    config.input.add(name=INPUT, data_type=mc.TYPE_FP32, dims=list(model.input_dims))
    config.output.add(name=OUTPUT, data_type=mc.TYPE_FP32, dims=list(model.output_dims))
    config.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
    if instances is not None:
        config.instance_group.add(count=instances, kind=mc.ModelInstanceGroup.KIND_CPU)
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return header + text_format.MessageToString(config)


def write_model_folder(
    dest: Path,
    model: PeerModel,
    artifact: Path,
    config_text: str,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """dest/<name>/config.pbtxt and dest/<name>/1/model.onnx (a symlink), plus `extra`
    files (name -> text) in the version folder."""
    folder = dest / model.name
    version = folder / VERSION
    version.mkdir(parents=True, exist_ok=True)
    link = version / ARTIFACT
    link.unlink(missing_ok=True)
    link.symlink_to(artifact.resolve())
    for name, text in (extra or {}).items():
        (version / name).write_text(text)
    (folder / "config.pbtxt").write_text(config_text)
    return folder


def infergate_repository(
    dest: Path, files: Mapping[str, Path], models: Sequence[PeerModel] = MODELS
) -> Path:
    """The repository infergate serves: each model pinned to onnxruntime."""
    for model in models:
        text = model_config_text(
            model,
            backend="onnxruntime",
            header="# Written by the benchmark (bench/peer_models.py).\n",
        )
        write_model_folder(dest, model, files[model.name], text)
    return dest
