"""Tensors to and from the protocol's raw byte form (little-endian, row-major).

Shared by the gateway and the client library so that both read and write the same
bytes. A BYTES element in raw form is a 4-byte little-endian length, then its bytes.
"""

from __future__ import annotations

import math

import numpy as np

from infergate.schema import datatypes
from infergate.schema.errors import InvalidInput, shown, shown_list

_LENGTH_PREFIX = 4


def decode_raw(
    name: str, datatype: datatypes.Datatype, shape: tuple[int, ...], buffer: bytes
) -> np.ndarray:
    """A read-only array viewing `buffer` (no copy); InvalidInput if sizes disagree."""
    count = math.prod(shape)
    if datatype.name == "BYTES":
        return decode_bytes_elements(name, shape, count, buffer)
    expected = count * datatype.numpy.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input {shown(name)}: raw contents are {len(buffer)} bytes, but shape "
            f"{shown_list(shape)} of {datatype.name} needs {expected}"
        )
    return np.frombuffer(buffer, dtype=datatype.numpy).reshape(shape)


def decode_bytes_elements(
    name: str, shape: tuple[int, ...], count: int, buffer: bytes
) -> np.ndarray:
    # Each element takes at least its length prefix: refuse a shape the bytes cannot
    # hold before allocating an array of that many elements.
    if count * _LENGTH_PREFIX > len(buffer):
        raise InvalidInput(
            f"input {shown(name)}: shape {shown_list(shape)} holds {count} BYTES elements, "
            f"which take at least {count * _LENGTH_PREFIX} bytes, but the raw contents are "
            f"{len(buffer)} bytes"
        )
    elements = np.empty(count, dtype=object)
    view = memoryview(buffer)
    offset = 0
    for i in range(count):
        if offset + _LENGTH_PREFIX > len(view):
            raise InvalidInput(
                f"input {shown(name)}: raw BYTES contents end after {i} of {count} elements"
            )
        length = int.from_bytes(view[offset : offset + _LENGTH_PREFIX], "little")
        offset += _LENGTH_PREFIX
        if offset + length > len(view):
            raise InvalidInput(
                f"input {shown(name)}: BYTES element {i} claims {length} bytes but only "
                f"{len(view) - offset} remain"
            )
        elements[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InvalidInput(
            f"input {shown(name)}: {len(view) - offset} bytes left over after the {count} "
            f"BYTES elements that shape {shown_list(shape)} holds"
        )
    return elements.reshape(shape)


def encode_raw(datatype: str, array: np.ndarray) -> bytes:
    """The raw wire bytes of an array holding `datatype` values."""
    if datatype == "BYTES":
        parts = []
        for element in array.reshape(-1):
            data = element if isinstance(element, bytes) else str(element).encode("utf-8")
            parts.append(len(data).to_bytes(_LENGTH_PREFIX, "little"))
            parts.append(data)
        return b"".join(parts)
    wanted = datatypes.from_name(datatype).numpy
    return np.ascontiguousarray(array, dtype=wanted).tobytes()
