"""The protocol's tensor datatypes and their numpy and ModelConfig equivalents.

One table, used by the wire conversion, validation and the backends, so that a
datatype is spelled and sized the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Datatype:
    name: str  # protocol string, e.g. "FP32"
    numpy: np.dtype[np.generic]  # how the gateway holds it in memory (little-endian)
    config_type: int  # model_config.DataType enum value
    # Which InferTensorContents field carries it when sent typed; None: raw only.
    contents_field: str | None


def _dt(code: str) -> np.dtype[np.generic]:
    return np.dtype(code)


_TABLE = (
    Datatype("BOOL", _dt("?"), 1, "bool_contents"),
    Datatype("UINT8", _dt("<u1"), 2, "uint_contents"),
    Datatype("UINT16", _dt("<u2"), 3, "uint_contents"),
    Datatype("UINT32", _dt("<u4"), 4, "uint_contents"),
    Datatype("UINT64", _dt("<u8"), 5, "uint64_contents"),
    Datatype("INT8", _dt("<i1"), 6, "int_contents"),
    Datatype("INT16", _dt("<i2"), 7, "int_contents"),
    Datatype("INT32", _dt("<i4"), 8, "int_contents"),
    Datatype("INT64", _dt("<i8"), 9, "int64_contents"),
    Datatype("FP16", _dt("<f2"), 10, None),
    Datatype("FP32", _dt("<f4"), 11, "fp32_contents"),
    Datatype("FP64", _dt("<f8"), 12, "fp64_contents"),
    # Variable-length byte strings, held as an object array of `bytes`.
    Datatype("BYTES", _dt("O"), 13, "bytes_contents"),
    # numpy has no bfloat16: the gateway carries its bits as uint16.
    Datatype("BF16", _dt("<u2"), 14, None),
)

BY_NAME: dict[str, Datatype] = {d.name: d for d in _TABLE}
BY_CONFIG_TYPE: dict[int, Datatype] = {d.config_type: d for d in _TABLE}
# From numpy to protocol; BF16 is never inferred (uint16 means UINT16).
_BY_NUMPY: dict[np.dtype[np.generic], Datatype] = {d.numpy: d for d in _TABLE if d.name != "BF16"}


def from_name(name: str) -> Datatype:
    """The datatype for a protocol string; KeyError if unknown."""
    return BY_NAME[name]


def from_numpy(dtype: np.dtype[np.generic]) -> Datatype:
    """The protocol datatype for a numpy dtype; str/bytes/object arrays are BYTES."""
    if dtype.kind in "OSU":
        return BY_NAME["BYTES"]
    found = _BY_NUMPY.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
    if found is None:
        raise KeyError(f"numpy dtype {dtype} has no protocol datatype")
    return found


def is_known(name: str) -> bool:
    return name in BY_NAME
