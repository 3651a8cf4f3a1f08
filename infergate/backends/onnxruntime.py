"""The ONNX Runtime backend (onnxruntime-gpu; CPU where no GPU provider loads)."""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from infergate.backends.base import Backend, BackendOptions, KnownSpecsModel, LoadedModel
from infergate.backends.providers import (
    CUDA,
    TENSORRT,
    ProviderChoice,
    ProviderProbe,
    choose_providers,
    probe_providers,
)
from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import VARIABLE, TensorSpec

log = logging.getLogger(__name__)

# onnxruntime's type strings ("tensor(float)") to protocol datatypes.
_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}
_ONNX_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16
# onnxruntime's log levels: 0 verbose .. 3 error, 4 fatal. Fatal only: a failed run
# is logged by onnxruntime as an error on stderr, so every request with bad values
# would write two lines there (a log flood any client could drive); the gateway
# reports failures itself, with the runtime's message.
_ORT_LOG_FATAL = 4
# onnxruntime's session config key: "0" lets idle intra-op pool threads sleep.
ALLOW_SPINNING = "session.intra_op.allow_spinning"


@functools.cache
def _probe() -> ProviderProbe:
    """What this machine offers; probed once per process (it does not change)."""
    return probe_providers()


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    artifact_names = ("model.onnx",)

    def __init__(self, probe: ProviderProbe | None = None) -> None:
        self._given_probe = probe

    @property
    def probe(self) -> ProviderProbe:
        return self._given_probe or _probe()

    def version(self) -> str:
        import onnxruntime as ort

        return str(ort.__version__)

    def devices(self) -> list[str]:
        choice = choose_providers(self.probe)
        return [choice.device] if choice.device == "cpu" else [choice.device, "cpu"]

    def choose(self, options: BackendOptions) -> ProviderChoice:
        device_id = int(options.extra.get("device_id", "0"))
        return choose_providers(self.probe, use_gpu=options.use_gpu, device_id=device_id)

    def intra_op_threads(self, options: BackendOptions) -> int:
        return options.sleeping_intra_op_threads or options.intra_op_threads

    def load(self, artifact: Path, options: BackendOptions) -> LoadedModel:
        import onnxruntime as ort

        choice = self.choose(options)
        for provider, reason in choice.skipped.items():
            log.debug("onnxruntime: not using %s: %s", provider, reason)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.intra_op_threads(options)
        so.inter_op_num_threads = options.inter_op_threads
        # Idle pool threads sleep instead of spinning: they share the cores with the
        # gRPC front end, and spinning took it a quarter of mlp_small's throughput
        # with 2 threads on 2 cores (docs/performance.md).
        so.add_session_config_entry(ALLOW_SPINNING, "0")
        so.log_severity_level = _ORT_LOG_FATAL
        provider_options = [_provider_options(p, options) for p in choice.providers]
        try:
            session = ort.InferenceSession(
                str(artifact),
                sess_options=so,
                providers=list(choice.providers),
                provider_options=provider_options,
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelLoadError(f"onnxruntime could not load {artifact.name}: {exc}") from exc
        return OnnxRuntimeModel(session, choice.device)


def _provider_options(provider: str, options: BackendOptions) -> dict[str, str]:
    device_id = options.extra.get("device_id", "0")
    if provider == TENSORRT:
        return {"device_id": device_id, "trt_fp16_enable": options.extra.get("trt_fp16", "false")}
    if provider == CUDA:
        return {"device_id": device_id}
    return {}


class OnnxRuntimeModel(KnownSpecsModel):
    def __init__(self, session: object, device: str) -> None:
        import onnxruntime as ort

        assert isinstance(session, ort.InferenceSession)
        self._session = session
        self.set_specs(
            [_spec(i) for i in session.get_inputs()],
            [_spec(o) for o in session.get_outputs()],
            device,
        )
        self._output_names = [o.name for o in self._outputs]
        # Inputs onnxruntime wants as str, not bytes (string tensors).
        self._string_inputs = {t.name for t in self._inputs if t.datatype == "BYTES"}
        # numpy has no bfloat16: such models go through OrtValues holding the bits.
        self._bf16 = any(t.datatype == "BF16" for t in (*self._inputs, *self._outputs))

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {
            name: (_to_str(array) if name in self._string_inputs else array)
            for name, array in inputs.items()
        }
        if self._bf16:
            return self._infer_bf16(feed)
        results = self._session.run(self._output_names, feed)
        return {
            name: (_to_bytes(value) if value.dtype.kind in "OU" else value)
            for name, value in zip(self._output_names, results, strict=True)
        }

    def _infer_bf16(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        bf16_inputs = {t.name for t in self._inputs if t.datatype == "BF16"}
        values = {
            name: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array, _ONNX_BFLOAT16)
            if name in bf16_inputs
            else ort.OrtValue.ortvalue_from_numpy(array)
            for name, array in feed.items()
        }
        results = self._session.run_with_ort_values(self._output_names, values)
        outputs = {}
        for name, value in zip(self._output_names, results, strict=True):
            if value.data_type() == "tensor(bfloat16)":
                shape = tuple(value.shape())
                count = int(np.prod(shape, dtype=np.int64))
                # Copy the bits out of onnxruntime's buffer before the value goes.
                buffer = (ctypes.c_uint16 * count).from_address(value.data_ptr())
                outputs[name] = np.ctypeslib.as_array(buffer).reshape(shape).copy()
            else:
                outputs[name] = value.numpy()
        return outputs

    def close(self) -> None:
        # Dropping the session frees it; there is no explicit close in onnxruntime.
        del self._session


def _spec(node: object) -> TensorSpec:
    name = str(getattr(node, "name"))  # noqa: B009 - onnxruntime's NodeArg is untyped
    ort_type = str(getattr(node, "type"))  # noqa: B009
    datatype = _ORT_TYPES.get(ort_type)
    if datatype is None:
        raise ModelLoadError(f"tensor '{name}' has type {ort_type}, which is not supported")
    shape = tuple(d if isinstance(d, int) and d >= 0 else VARIABLE for d in node.shape)  # type: ignore[attr-defined]
    return TensorSpec(name, datatype, shape)


def _to_str(array: np.ndarray) -> np.ndarray:
    return (
        np.vectorize(
            lambda b: b.decode("utf-8") if isinstance(b, bytes) else str(b), otypes=[object]
        )(array)
        if array.size
        else array.astype(object)
    )


def _to_bytes(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, value in enumerate(array.reshape(-1)):
        flat[i] = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return out
