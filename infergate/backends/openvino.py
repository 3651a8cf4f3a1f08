"""The OpenVINO backend: ONNX or OpenVINO IR, compiled for the CPU with a performance hint.

Settings (BackendOptions.extra):
- `performance_hint`: THROUGHPUT (default) or LATENCY. THROUGHPUT splits the cores
  into streams so that batches from several worker threads run side by side;
  LATENCY gives every core to one batch at a time. See README.md, "Backends", for
  the measurements behind the default.
- `num_streams`: overrides the streams the hint picks ("AUTO" or a number).
- `infer_requests`: how many batches may be in flight at once (default: what the
  compiled model says is optimal, at least 2).
- `inference_precision`: f32 (default) or bf16/f16. OpenVINO would silently run
  bf16 on CPUs with AMX or AVX512-BF16; an fp32 model is served as fp32, and a
  lower precision is a variant to be checked for accuracy, not a side effect.
BackendOptions.intra_op_threads caps OpenVINO's inference threads (0: all cores);
use_gpu and inter_op_threads are ignored: this backend compiles for the CPU only.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from infergate.backends.base import Backend, BackendOptions, KnownSpecsModel, LoadedModel
from infergate.backends.names import ArtifactTensor, map_names, public_specs
from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import VARIABLE, TensorSpec

log = logging.getLogger(__name__)

HINTS = ("THROUGHPUT", "LATENCY")
DEFAULT_HINT = "THROUGHPUT"
_PRECISIONS = ("f32", "bf16", "f16")
# OpenVINO element type names to protocol datatypes; others are refused at load.
_OV_TYPES = {
    "boolean": "BOOL",
    "u8": "UINT8",
    "u16": "UINT16",
    "u32": "UINT32",
    "u64": "UINT64",
    "i8": "INT8",
    "i16": "INT16",
    "i32": "INT32",
    "i64": "INT64",
    "f16": "FP16",
    "f32": "FP32",
    "f64": "FP64",
}
# Artifact file suffix -> the OpenVINO frontend that reads it. Naming the frontend
# (rather than core.read_model guessing) keeps a corrupt file's error to the point
# instead of a trail of every other frontend's parse errors on stderr.
_FRONTENDS = {".xml": "ir", ".onnx": "onnx"}


class OpenVinoBackend(Backend):
    name = "openvino"
    # IR first: it is what OpenVINO's own tools produce, and reads without conversion.
    artifact_names = ("model.xml", "model.onnx")

    def __init__(self) -> None:
        self._core: Any = None
        self._core_lock = threading.Lock()

    def core(self) -> Any:
        """This backend's OpenVINO Core, made on first use; it holds the CPU plugin,
        and compiling through it from several threads is safe."""
        with self._core_lock:
            if self._core is None:
                import openvino as ov

                self._core = ov.Core()
            return self._core

    def version(self) -> str:
        import openvino as ov

        # "2026.4.1-22982-e213a147257-releases/2026/4": the release is enough here.
        return str(ov.__version__).split("-")[0]

    def devices(self) -> list[str]:
        return ["cpu"]

    def load(self, artifact: Path, options: BackendOptions) -> LoadedModel:
        config = compile_config(options)
        where = f"openvino: {artifact.name}"
        try:
            wanted = int(options.extra.get("infer_requests", "0"))
        except ValueError as exc:
            raise ModelLoadError(f"{where}: infer_requests must be a number") from exc
        model = _read(artifact)
        try:
            compiled = self.core().compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ModelLoadError(f"{where}: could not compile for CPU: {exc}") from exc
        optimal = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        # At least two, so that two batches can be in flight even under LATENCY
        # (one stream: the second is queued inside OpenVINO, ready to start the
        # moment the first ends, rather than waiting in our pool).
        requests = wanted if wanted > 0 else max(optimal, 2)
        return OpenVinoModel(compiled, options, requests, where)


def compile_config(options: BackendOptions) -> dict[str, str]:
    """The CPU plugin properties for these options; ModelLoadError on a bad setting."""
    hint = options.extra.get("performance_hint", DEFAULT_HINT).upper()
    if hint not in HINTS:
        raise ModelLoadError(f"openvino: performance_hint must be one of {HINTS}, not '{hint}'")
    precision = options.extra.get("inference_precision", "f32").lower()
    if precision not in _PRECISIONS:
        raise ModelLoadError(
            f"openvino: inference_precision must be one of {_PRECISIONS}, not '{precision}'"
        )
    config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision}
    if options.intra_op_threads > 0:
        config["INFERENCE_NUM_THREADS"] = str(options.intra_op_threads)
    if "num_streams" in options.extra:
        config["NUM_STREAMS"] = options.extra["num_streams"]
    return config


def _read(artifact: Path) -> Any:
    from openvino.frontend import FrontEndManager

    framework = _FRONTENDS.get(artifact.suffix)
    if framework is None:
        raise ModelLoadError(f"openvino: cannot read {artifact.name} (reads {sorted(_FRONTENDS)})")
    try:
        frontend = FrontEndManager().load_by_framework(framework)
        # An IR's weights (model.bin beside model.xml) are found by the frontend.
        return frontend.convert(frontend.load(str(artifact)))
    except Exception as exc:
        raise ModelLoadError(f"openvino could not read {artifact.name}: {exc}") from exc


class OpenVinoModel(KnownSpecsModel):
    """A compiled model and a pool of infer requests, one per batch in flight.

    An InferRequest runs one batch at a time; each worker thread takes one from the
    pool for its call and gives it back, so concurrent calls run on separate
    requests (and so on separate streams under THROUGHPUT) and never share buffers.
    """

    def __init__(self, compiled: Any, options: BackendOptions, requests: int, where: str) -> None:
        self._compiled = compiled
        inputs = [_artifact_tensor(port, where) for port in compiled.inputs]
        outputs = [_artifact_tensor(port, where) for port in compiled.outputs]
        # ONNX and IR names are the author's: match them exactly (see backends.names).
        in_names = map_names(
            "input", options.expected_inputs, inputs, by_position=False, where=where
        )
        out_names = map_names(
            "output", options.expected_outputs, outputs, by_position=False, where=where
        )
        self.set_specs(public_specs(inputs, in_names), public_specs(outputs, out_names))
        self._input_ports = {name: i for i, name in enumerate(in_names)}
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(requests):
            self._pool.put(compiled.create_infer_request())
        self.infer_requests = requests
        self.performance_hint = str(compiled.get_property("PERFORMANCE_HINT"))
        log.debug(
            "%s: %s, %s streams, %d infer requests",
            where,
            self.performance_hint,
            compiled.get_property("NUM_STREAMS"),
            requests,
        )

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {self._input_ports[name]: array for name, array in inputs.items()}
        request = self._pool.get()  # blocks while every request is busy
        try:
            # share_inputs: OpenVINO reads our arrays in place (they outlive the call);
            # outputs are copied out, since the request's buffers are reused next call.
            results = request.infer(feed, share_inputs=True, share_outputs=False)
            values = results.to_tuple()
        finally:
            self._pool.put(request)
        return {spec.name: values[i] for i, spec in enumerate(self._outputs)}

    def close(self) -> None:
        # Dropping the requests and the compiled model frees them; OpenVINO has no close.
        while not self._pool.empty():
            self._pool.get_nowait()
        del self._compiled


def _artifact_tensor(port: Any, where: str) -> ArtifactTensor:
    names = sorted(port.get_names())
    name = port.get_any_name() if names else str(port.get_node().get_friendly_name())
    type_name = port.get_element_type().get_type_name()
    datatype = _OV_TYPES.get(type_name)
    if datatype is None:
        raise ModelLoadError(f"{where}: tensor '{name}' has type {type_name}, not supported here")
    partial = port.get_partial_shape()
    if partial.rank.is_dynamic:
        raise ModelLoadError(f"{where}: tensor '{name}' has a dynamic rank, not supported here")
    shape = tuple(d.get_length() if d.is_static else VARIABLE for d in partial)
    aliases = tuple(n for n in names if n != name)
    return ArtifactTensor(TensorSpec(name, datatype, shape), aliases=aliases)
