"""The TFLite backend, through LiteRT (`ai-edge-litert`), with XNNPACK on the CPU.

A LiteRT Interpreter is not thread-safe, so each worker thread gets its own (made
on its first call, from the same model bytes); an interpreter resizes its inputs
and re-allocates only when a batch's shape differs from its previous one. LiteRT
applies XNNPACK, its optimized CPU delegate, by default to float models; whether it
did is checked at load (`TfLiteModel.xnnpack`, a warning when not).

Settings: BackendOptions.intra_op_threads sets each interpreter's threads (0:
LiteRT's default), overridden by BackendOptions.extra["num_threads"];
extra["signature"] picks the SignatureDef that names the tensors (default
"serving_default", or the model's only one). use_gpu and inter_op_threads are ignored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infergate.backends.base import Backend, BackendOptions, KnownSpecsModel, LoadedModel
from infergate.backends.names import ArtifactTensor, map_names, public_specs
from infergate.schema import datatypes
from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import TensorSpec

log = logging.getLogger(__name__)

_DEFAULT_SIGNATURE = "serving_default"
# What a delegated partition of the graph is called in the interpreter's node list.
_DELEGATE_NODE = "DELEGATE"


class TfLiteBackend(Backend):
    name = "tflite"
    artifact_names = ("model.tflite",)

    def version(self) -> str:
        from importlib.metadata import version

        import ai_edge_litert.interpreter  # noqa: F401 - the availability check

        return version("ai-edge-litert")

    def devices(self) -> list[str]:
        return ["cpu"]

    def load(self, artifact: Path, options: BackendOptions) -> LoadedModel:
        where = f"tflite: {artifact.name}"
        try:
            threads_setting = options.extra.get("num_threads", str(options.intra_op_threads))
            threads = int(threads_setting)
        except ValueError as exc:
            raise ModelLoadError(f"{where}: num_threads must be a number") from exc
        try:
            content = artifact.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"{where}: cannot read it: {exc}") from exc
        return TfLiteModel(content, options, threads if threads > 0 else None, artifact.name)


@dataclass
class _Worker:
    """One thread's interpreter and the input shapes it is allocated for."""

    interpreter: Any
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    allocations: int = 0  # resizes it has done: shows that same-shape calls do none


class TfLiteModel(KnownSpecsModel):
    """A .tflite model: one LiteRT interpreter per calling thread, all from one buffer."""

    def __init__(
        self, content: bytes, options: BackendOptions, threads: int | None, artifact: str
    ) -> None:
        self._content = content  # interpreters read the flatbuffer in place: keep it alive
        self._threads = threads
        self._artifact = artifact
        where = f"tflite: {artifact}"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        # The loading thread's interpreter describes the model, and serves that
        # thread later (the loader warms the model up from it).
        first = self._worker()
        interpreter = first.interpreter
        signature = _signature(interpreter, options.extra.get("signature"), where)
        inputs = _tensors(interpreter.get_input_details(), signature.get("inputs", {}), where)
        outputs = _tensors(interpreter.get_output_details(), signature.get("outputs", {}), where)
        # Converter-made names: match by signature name, then position (backends.names).
        in_names = map_names(
            "input", options.expected_inputs, inputs, by_position=True, where=where
        )
        out_names = map_names(
            "output", options.expected_outputs, outputs, by_position=True, where=where
        )
        self.set_specs(public_specs(inputs, in_names), public_specs(outputs, out_names))
        indices = [d["index"] for d in interpreter.get_input_details()]
        self._input_index = dict(zip(in_names, indices, strict=True))
        self._output_index = {
            name: d["index"]
            for name, d in zip(out_names, interpreter.get_output_details(), strict=True)
        }
        self.xnnpack = _uses_delegate(interpreter)
        if not self.xnnpack:
            log.warning("%s: XNNPACK did not take this model; it runs on LiteRT's kernels", where)

    @property
    def interpreters(self) -> int:
        """How many interpreters exist: one per thread that has called (or loaded) it."""
        with self._lock:
            return len(self._workers)

    @property
    def allocations(self) -> int:
        """Re-allocations for a new input shape, over all interpreters."""
        with self._lock:
            return sum(w.allocations for w in self._workers)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        worker = self._worker()
        interpreter = worker.interpreter
        wanted = {self._input_index[name]: array for name, array in inputs.items()}
        resized = [i for i, array in wanted.items() if worker.shapes.get(i) != array.shape]
        if resized:
            worker.shapes.clear()  # if allocation fails, the next call starts over
            for index in resized:
                # strict: only the dims the model declares variable may change.
                interpreter.resize_tensor_input(index, wanted[index].shape, strict=True)
            interpreter.allocate_tensors()
            worker.allocations += 1
            worker.shapes.update((i, array.shape) for i, array in wanted.items())
        for index, array in wanted.items():
            interpreter.set_tensor(index, np.ascontiguousarray(array))
        interpreter.invoke()
        # get_tensor copies: the interpreter's buffers are reused by the next call.
        return {name: interpreter.get_tensor(i) for name, i in self._output_index.items()}

    def close(self) -> None:
        with self._lock:
            self._workers.clear()
        self._local = threading.local()

    def _worker(self) -> _Worker:
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is None:
            worker = _Worker(self._new_interpreter())
            worker.shapes = {
                d["index"]: tuple(int(n) for n in d["shape"])
                for d in worker.interpreter.get_input_details()
            }
            self._local.worker = worker
            with self._lock:
                self._workers.append(worker)
        return worker

    def _new_interpreter(self) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_content=self._content, num_threads=self._threads)
            interpreter.allocate_tensors()  # also where LiteRT applies XNNPACK
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError
            raise ModelLoadError(f"tflite could not load {self._artifact}: {exc}") from exc
        return interpreter


def _signature(interpreter: Any, wanted: str | None, where: str) -> dict[str, dict[str, int]]:
    """The chosen SignatureDef as {"inputs": {name: tensor index}, "outputs": {...}}.

    Only its names are used (tensors run through the main subgraph), so one whose
    tensors are not the main subgraph's inputs and outputs is ignored.
    """
    signatures = list(interpreter.get_signature_list())
    if wanted is not None and wanted not in signatures:
        raise ModelLoadError(f"{where}: no signature '{wanted}' (it has {signatures})")
    key = wanted or (
        _DEFAULT_SIGNATURE if _DEFAULT_SIGNATURE in signatures else next(iter(signatures), None)
    )
    if key is None:
        return {}
    runner = interpreter.get_signature_runner(key)
    found = {
        "inputs": {name: int(d["index"]) for name, d in runner.get_input_details().items()},
        "outputs": {name: int(d["index"]) for name, d in runner.get_output_details().items()},
    }
    main_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    main_outputs = {int(d["index"]) for d in interpreter.get_output_details()}
    if set(found["inputs"].values()) != main_inputs or set(found["outputs"].values()) != (
        main_outputs
    ):
        log.info("%s: signature '%s' is not the main graph's; its names are not used", where, key)
        return {}
    return found


def _tensors(
    details: Sequence[Mapping[str, Any]], signature: Mapping[str, int], where: str
) -> list[ArtifactTensor]:
    by_index = {index: name for name, index in signature.items()}
    tensors = []
    for d in details:
        name = str(d["name"])
        try:
            datatype = datatypes.from_numpy(np.dtype(d["dtype"])).name
        except KeyError:
            datatype = ""
        if datatype in ("", "BYTES"):  # string tensors: not through this backend yet
            raise ModelLoadError(f"{where}: tensor '{name}' has type {d['dtype']}, not supported")
        # shape_signature keeps -1 where the model leaves a dim variable (the batch).
        shape = tuple(int(n) for n in d.get("shape_signature", d["shape"]))
        signature_name = by_index.get(int(d["index"]), "")
        tensors.append(
            ArtifactTensor(TensorSpec(name, datatype, shape), signature_name=signature_name)
        )
    return tensors


def _uses_delegate(interpreter: Any) -> bool:
    """Whether a delegate (on the CPU, XNNPACK: LiteRT's only default one) took part of
    the graph: it then shows as a DELEGATE node in the interpreter's node list."""
    try:
        ops = interpreter._get_ops_details()  # LiteRT has no public way to ask
    except Exception:  # a LiteRT without it: cannot tell, do not claim it
        return False
    return any(op.get("op_name") == _DELEGATE_NODE for op in ops)
