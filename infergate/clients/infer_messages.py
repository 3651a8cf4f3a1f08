"""numpy arrays to ModelInferRequest, ModelInferResponse to numpy arrays.

Every input goes as raw bytes (the protocol's fast path: no per-element encoding), in
the byte form that the gateway reads with the same codec (infergate.schema.codec).

How each datatype is held in numpy:
- BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64: the matching numpy dtype; the
  datatype is read from the array's dtype.
- BYTES: an object array of `bytes` (str elements are sent as UTF-8), or a numpy
  bytes/str array. Outputs come back as object arrays of `bytes`.
- BF16: uint16 bit patterns (numpy has no bfloat16), marked as BF16 with
  `Tensor(bits, "BF16")`; `Tensor(float32_values, "BF16")` converts values to bits
  for you, and an ml_dtypes.bfloat16 array is sent as it is. Outputs come back as bit
  patterns unless `bf16_as_float32=True` (see infergate.clients.bfloat16).
Outputs decoded from raw bytes are read-only views of the response (no copy); call
`.copy()` on one to write to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from infergate.clients.bfloat16 import from_bf16, to_bf16
from infergate.protocol import inference_pb2 as pb
from infergate.schema import codec, datatypes

Parameter = bool | int | float | str


@dataclass(frozen=True)
class Tensor:
    """An input whose protocol datatype is named rather than read from its numpy dtype:
    BF16 (see the module's notes), or values to be converted (`Tensor([1, 2], "INT64")`)."""

    data: ArrayLike
    datatype: str


InputValue = ArrayLike | Tensor


def encode_input(name: str, value: InputValue) -> tuple[str, np.ndarray]:
    """The protocol datatype of an input and the array that holds its values.

    ValueError when neither says which datatype it is (a complex array, an unknown
    datatype name).
    """
    if isinstance(value, Tensor):
        return _named(name, value)
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":  # ml_dtypes (JAX, TensorFlow): same bits as ours
        return "BF16", array.view("<u2")
    try:
        return datatypes.from_numpy(array.dtype).name, array
    except KeyError:
        raise ValueError(
            f"input '{name}': numpy dtype {array.dtype} has no protocol datatype; "
            "convert it, or name the datatype with Tensor(values, datatype)"
        ) from None


def _named(name: str, tensor: Tensor) -> tuple[str, np.ndarray]:
    datatype = tensor.datatype.upper()
    if not datatypes.is_known(datatype):
        raise ValueError(
            f"input '{name}': unknown datatype {tensor.datatype!r}; one of "
            + ", ".join(datatypes.BY_NAME)
        )
    array = np.asarray(tensor.data)
    if datatype == "BF16":
        if array.dtype.kind == "f":
            return datatype, to_bf16(array)
        if array.dtype.name == "bfloat16":
            return datatype, array.view("<u2")
        return datatype, array.astype("<u2", copy=False)
    if datatype == "BYTES":
        return datatype, array
    return datatype, array.astype(datatypes.from_name(datatype).numpy, copy=False)


def build_request(
    model: str,
    inputs: Mapping[str, InputValue],
    outputs: Sequence[str] | None = None,
    version: str = "",
    request_id: str = "",
    parameters: Mapping[str, Parameter] | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest with every input as raw bytes; `outputs` None asks for all."""
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    raw = request.raw_input_contents
    for name, value in inputs.items():
        datatype, array = encode_input(name, value)
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(array.shape)
        raw.append(codec.encode_raw(datatype, array))
    for name in outputs or ():
        request.outputs.add(name=name)
    for key, value in (parameters or {}).items():
        set_parameter(request.parameters[key], value)
    return request


def set_parameter(target: pb.InferParameter, value: Parameter) -> None:
    # bool before int: True is an int to Python, a bool_param to the protocol.
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = value


def parse_response(
    response: pb.ModelInferResponse, bf16_as_float32: bool = False
) -> dict[str, np.ndarray]:
    """Output arrays by name, from raw contents or typed contents."""
    outputs: dict[str, np.ndarray] = {}
    raw = response.raw_output_contents
    for index, tensor in enumerate(response.outputs):
        datatype = datatypes.from_name(tensor.datatype)
        shape = tuple(tensor.shape)
        if raw:
            array = codec.decode_raw(tensor.name, datatype, shape, raw[index])
        else:
            field = datatype.contents_field or "fp32_contents"
            values = list(getattr(tensor.contents, field))
            array = np.array(values, dtype=datatype.numpy).reshape(shape)
        if bf16_as_float32 and datatype.name == "BF16":
            array = from_bf16(array)
        outputs[tensor.name] = array
    return outputs
