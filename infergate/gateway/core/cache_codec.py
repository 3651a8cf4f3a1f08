"""A cached response as bytes, for a cache shared across processes (the Redis tier).

Never pickle: whoever can write to Redis could then run code in every gateway.
This format can only ever decode to tensors, and anything it does not expect is
refused (CorruptEntry), which the store treats as a miss.

    magic "IG", version 1 (u8), the key's 32-byte digest,
    tensor count (u16), then per tensor:
        name (u16 length + UTF-8), datatype (u8 length + ASCII),
        ndim (u8) and each dimension (u64),
        raw contents (u64 length + the protocol's raw bytes, infergate.schema.codec;
        BYTES elements are each a u32 length and their bytes)

Integers are little-endian. The digest ties a value to the key it was stored
under: a value that arrives for another key (a bug, a desynchronised connection,
a foreign writer) is refused instead of answered.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from infergate.gateway.core.cache import Outputs
from infergate.gateway.core.request import OutputTensor
from infergate.schema import codec, datatypes
from infergate.schema.errors import InvalidInput

MAGIC = b"IG"
VERSION = 1
_HEADER = struct.Struct("<2sB32sH")
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
_BYTES_PREFIX = 4  # each BYTES element's length prefix in raw form
_MAX_DIMS = 64


class CorruptEntry(ValueError):
    """Bytes that are not a response this version wrote for this key."""


def encode(digest: bytes, outputs: Sequence[OutputTensor]) -> bytes:
    """The stored form of `outputs` under the key whose digest is `digest`."""
    if len(digest) != 32:
        raise ValueError(f"a cache key's digest is 32 bytes, not {len(digest)}")
    if len(outputs) > 0xFFFF:
        raise ValueError(f"{len(outputs)} outputs do not fit the format")
    parts = [_HEADER.pack(MAGIC, VERSION, digest, len(outputs))]
    for output in outputs:
        name = output.name.encode()
        datatype = output.datatype.encode("ascii")
        shape = output.data.shape
        if len(name) > 0xFFFF or len(datatype) > 0xFF or len(shape) > _MAX_DIMS:
            raise ValueError(f"output '{output.name}' does not fit the format")
        raw = codec.encode_raw(output.datatype, output.data)
        parts += (
            _U16.pack(len(name)),
            name,
            _U8.pack(len(datatype)),
            datatype,
            _U8.pack(len(shape)),
            *(_U64.pack(dim) for dim in shape),
            _U64.pack(len(raw)),
            raw,
        )
    return b"".join(parts)


def decode(digest: bytes, value: bytes) -> Outputs:
    """The outputs stored in `value` for the key `digest`; CorruptEntry if it is not one."""
    try:
        return _decode(digest, value)
    except CorruptEntry:
        raise
    except (struct.error, ValueError, KeyError, InvalidInput) as exc:
        # UnicodeDecodeError is a ValueError.
        raise CorruptEntry(f"{type(exc).__name__}: {exc}") from exc


def _decode(digest: bytes, value: bytes) -> Outputs:
    magic, version, stored_digest, count = _HEADER.unpack_from(value, 0)
    if magic != MAGIC or version != VERSION:
        raise CorruptEntry(f"not a version {VERSION} entry")
    if stored_digest != digest:
        raise CorruptEntry("stored under another key")
    offset = _HEADER.size
    outputs = []
    for _ in range(count):
        (length,) = _U16.unpack_from(value, offset)
        offset += _U16.size
        name = _take(value, offset, length).decode()
        offset += length
        (length,) = _U8.unpack_from(value, offset)
        offset += _U8.size
        datatype = datatypes.from_name(_take(value, offset, length).decode("ascii"))
        offset += length
        (ndim,) = _U8.unpack_from(value, offset)
        offset += _U8.size
        if ndim > _MAX_DIMS:
            raise CorruptEntry(f"{ndim} dimensions")
        shape = tuple(_U64.unpack_from(value, offset + i * _U64.size)[0] for i in range(ndim))
        offset += ndim * _U64.size
        (length,) = _U64.unpack_from(value, offset)
        offset += _U64.size
        raw = _take(value, offset, length)
        offset += length
        if datatype.name == "BYTES" and math.prod(shape) * _BYTES_PREFIX > len(raw):
            # Checked before decoding allocates an array of that many elements.
            raise CorruptEntry(f"shape {list(shape)} cannot fit in {len(raw)} bytes")
        outputs.append(
            OutputTensor(name, datatype.name, codec.decode_raw(name, datatype, shape, raw))
        )
    if offset != len(value):
        raise CorruptEntry(f"{len(value) - offset} bytes after the last tensor")
    return tuple(outputs)


def _take(value: bytes, offset: int, length: int) -> bytes:
    if offset + length > len(value):
        raise CorruptEntry("ends early")
    return value[offset : offset + length]
