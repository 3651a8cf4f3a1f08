"""bfloat16 as numpy can hold it: the 16-bit patterns in a uint16 array.

numpy has no bfloat16 type, so the client sends and returns BF16 tensors as their bit
patterns (the top half of a float32's bits). These two functions convert them to and
from float32 for callers who want values; `infer(..., bf16_as_float32=True)` applies
`from_bf16` to every BF16 output.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

_QUIET_NAN_BIT = 0x0040


def to_bf16(values: ArrayLike) -> np.ndarray:
    """float32 values as bfloat16 bit patterns (little-endian uint16), rounded to nearest
    even as hardware does; NaN stays NaN and infinities stay infinite."""
    floats = np.asarray(values, dtype=np.float32)
    # 64-bit arithmetic: adding the rounding bias to a 32-bit pattern can overflow it.
    bits = floats.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    # Rounding could turn a NaN whose payload sits in the low bits into infinity.
    nan = np.isnan(floats)
    rounded[nan] = (bits[nan] >> 16) | _QUIET_NAN_BIT
    return rounded.astype("<u2")


def from_bf16(bits: ArrayLike) -> np.ndarray:
    """bfloat16 bit patterns (uint16) as float32 values (exact: every bfloat16 is one)."""
    patterns = np.asarray(bits, dtype="<u2")
    return (patterns.astype(np.uint32) << 16).view(np.float32)
