"""The stored form of a cached response: every datatype round-trips, and bytes that
are not an entry this version wrote for this key are refused, never executed, never
a crash or a huge allocation."""

from __future__ import annotations

import contextlib
import pickle
import random

import numpy as np
import pytest

from infergate.gateway.core import cache_codec
from infergate.gateway.core.cache_codec import CorruptEntry, decode, encode
from infergate.gateway.core.request import OutputTensor

DIGEST = bytes(range(32))


def outputs() -> list[OutputTensor]:
    return [
        OutputTensor(
            "probabilities", "FP32", np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
        ),
        OutputTensor("label", "INT64", np.array([[7], [-1], [2**40]], dtype=np.int64)),
        OutputTensor(
            "text", "BYTES", np.array([[b"a", b""], [b"\x00\xff", "é".encode()]], dtype=object)
        ),
        OutputTensor("mask", "BOOL", np.array([True, False, True])),
        OutputTensor("half", "FP16", np.array([1.5, -2.0], dtype=np.float16)),
        OutputTensor("bf16", "BF16", np.array([0x3F80, 0xC000], dtype=np.uint16)),
        OutputTensor("scalar", "FP64", np.array(3.25)),
        OutputTensor("empty", "UINT8", np.zeros((0, 5), dtype=np.uint8)),
        OutputTensor("ünïcode name", "INT8", np.array([-128, 127], dtype=np.int8)),
    ]


def test_every_datatype_round_trips_with_its_name_shape_and_values() -> None:
    original = outputs()
    decoded = decode(DIGEST, encode(DIGEST, original))
    assert [(o.name, o.datatype) for o in decoded] == [(o.name, o.datatype) for o in original]
    for got, want in zip(decoded, original, strict=True):
        assert got.data.shape == want.data.shape
        assert got.data.dtype == want.data.dtype
        assert got.data.tolist() == want.data.tolist()


def test_non_contiguous_views_of_a_batch_are_encoded_by_value() -> None:
    batch = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = batch[1:3, ::2]
    (decoded,) = decode(DIGEST, encode(DIGEST, [OutputTensor("y", "FP32", view)]))
    np.testing.assert_array_equal(decoded.data, view)


def test_a_value_stored_under_another_key_is_refused() -> None:
    value = encode(DIGEST, outputs())
    with pytest.raises(CorruptEntry, match="another key"):
        decode(bytes(32), value)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"IG",
        b"hello world, not ours",
        pickle.dumps(outputs()),
        b"IG\x02" + DIGEST + b"\x00\x00",  # a later version of the format
    ],
)
def test_foreign_values_are_refused(value: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode(DIGEST, value)


def test_every_truncation_and_extension_is_refused() -> None:
    value = encode(DIGEST, outputs())
    for end in range(len(value)):
        with pytest.raises(CorruptEntry):
            decode(DIGEST, value[:end])
    with pytest.raises(CorruptEntry, match="after the last tensor"):
        decode(DIGEST, value + b"\x00")


def test_random_damage_decodes_or_is_refused_and_nothing_else() -> None:
    value = encode(DIGEST, outputs())
    rng = random.Random(18)
    for _ in range(3000):
        damaged = bytearray(value)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        with contextlib.suppress(CorruptEntry):
            decode(DIGEST, bytes(damaged))


def test_a_bytes_shape_larger_than_its_contents_is_refused_before_allocating() -> None:
    header = cache_codec._HEADER.pack(b"IG", 1, DIGEST, 1)
    tensor = (
        b"\x01\x00y" + b"\x05BYTES"  # name "y", datatype "BYTES"
        + b"\x02" + (2**31).to_bytes(8, "little") * 2  # shape [2**31, 2**31]
        + (8).to_bytes(8, "little") + b"\x00" * 8
    )  # fmt: skip
    with pytest.raises(CorruptEntry, match="cannot fit"):
        decode(DIGEST, header + tensor)
