"""OTLP trace export requests written straight in protobuf wire format.

The OpenTelemetry exporter builds a protobuf object per span, attribute and value in
Python (about 70 us a span here); writing the bytes directly, with the ids and times
in one struct.pack and repeated attributes framed once, costs about 2.5 us, and the
gateway makes four spans per request. The layout follows
opentelemetry/proto/trace/v1/trace.proto (field numbers below); tests parse the
output back with the official classes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

AttributeValue = str | bool | int | float

# OTLP SpanKind and Status.code values.
KIND_INTERNAL = 1
KIND_SERVER = 2
STATUS_ERROR = 2

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 is written as its two's complement
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _string_field(field: int, text: str) -> bytes:
    return _bytes_field(field, text.encode())


def _any_value(value: AttributeValue) -> bytes:
    # AnyValue: string_value = 1, bool_value = 2, int_value = 3, double_value = 4.
    if isinstance(value, str):
        return _string_field(1, value)
    if isinstance(value, bool):
        return _key(2, 0) + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return _key(3, 0) + _varint(value)
    return _key(4, 1) + _DOUBLE.pack(float(value))


def key_value(key: str, value: AttributeValue) -> bytes:
    """One KeyValue message (key = 1, value = 2), unframed."""
    return _string_field(1, key) + _bytes_field(2, _any_value(value))


# Framed attributes by (field, key, type, value): most repeat on every span (model
# name, rpc.system, the arm), so most cost one dict lookup. Bounded: past the limit
# new ones (request ids) are encoded each time instead of kept.
_FRAMED: dict[tuple[int, str, type, AttributeValue], bytes] = {}
_FRAMED_LIMIT = 10_000


def attribute(field: int, key: str, value: AttributeValue) -> bytes:
    """One KeyValue, framed as `field`."""
    # The type is in the key: True == 1 and hash(True) == hash(1).
    cache_key = (field, key, type(value), value)
    framed = _FRAMED.get(cache_key)
    if framed is None:
        framed = _bytes_field(field, key_value(key, value))
        if len(_FRAMED) < _FRAMED_LIMIT:
            _FRAMED[cache_key] = framed
    return framed


def attributes(field: int, values: Mapping[str, AttributeValue]) -> bytes:
    return b"".join([attribute(field, key, value) for key, value in values.items()])


# Span fields.
_TRACE_ID, _SPAN_ID, _TRACE_STATE, _PARENT_SPAN_ID, _NAME, _KIND = 1, 2, 3, 4, 5, 6
_START, _END, _ATTRIBUTES, _EVENTS, _LINKS, _STATUS = 7, 8, 9, 11, 13, 15


def span(
    *,
    trace_id: int,
    span_id: int,
    parent_span_id: int,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attributes_bytes: bytes,
    trace_state: str = "",
    links: Iterable[tuple[int, int]] = (),
    events: Iterable[tuple[int, str, Mapping[str, AttributeValue]]] = (),
    status_code: int = 0,
    status_message: str = "",
) -> bytes:
    """One Span message, unframed. attributes_bytes: KeyValues already framed as field 9."""
    # trace_id and span_id, framed, in one pack: tag, length 16, id; tag, length 8, id.
    parts = [_IDS.pack(_IDS_TAG_1, 16, trace_id >> 64, trace_id & _U64, _IDS_TAG_2, 8, span_id)]
    if trace_state:
        parts.append(_string_field(_TRACE_STATE, trace_state))
    if parent_span_id:
        parts.append(_PARENT_TAG + _FIXED64_BE.pack(parent_span_id))
    parts += [
        name_field(name),
        _TIMES.pack(_KIND_TAG, kind, _START_TAG, start_ns, _END_TAG, end_ns),
        attributes_bytes,
    ]
    for time_ns, event_name, event_attributes in events:
        # Event: time_unix_nano = 1, name = 2, attributes = 3.
        event = (
            _key(1, 1)
            + _FIXED64.pack(time_ns)
            + _string_field(2, event_name)
            + attributes(3, event_attributes)
        )
        parts.append(_bytes_field(_EVENTS, event))
    for link_trace_id, link_span_id in links:
        # Link: trace_id = 1, span_id = 2.
        link = _bytes_field(1, link_trace_id.to_bytes(16, "big")) + _bytes_field(
            2, link_span_id.to_bytes(8, "big")
        )
        parts.append(_bytes_field(_LINKS, link))
    if status_code or status_message:
        # Status: message = 2, code = 3.
        status = (_string_field(2, status_message) if status_message else b"") + (
            _key(3, 0) + _varint(status_code) if status_code else b""
        )
        parts.append(_bytes_field(_STATUS, status))
    return b"".join(parts)


def child_span(
    trace_id: int,
    span_id: int,
    parent_span_id: int,
    trace_state: str,
    start_ns: int,
    end_ns: int,
    name_bytes: bytes,
    attributes_bytes: bytes,
) -> bytes:
    """An internal span with a parent, no links, events or status, unframed: span()'s
    output for those (tests compare the two) in two struct packs and a join, since
    the exporter writes two of them per request. name_bytes: name_field(name);
    attributes_bytes: attributes(9, ...)."""
    if trace_state:
        head = (
            _IDS.pack(_IDS_TAG_1, 16, trace_id >> 64, trace_id & _U64, _IDS_TAG_2, 8, span_id)
            + _string_field(_TRACE_STATE, trace_state)
            + _PARENT_TAG
            + _FIXED64_BE.pack(parent_span_id)
        )
    else:
        head = _IDS_AND_PARENT.pack(
            _IDS_TAG_1,
            16,
            trace_id >> 64,
            trace_id & _U64,
            _IDS_TAG_2,
            8,
            span_id,
            _PARENT_TAG[0],
            8,
            parent_span_id,
        )
    times = _TIMES.pack(_KIND_TAG, KIND_INTERNAL, _START_TAG, start_ns, _END_TAG, end_ns)
    return b"".join((head, name_bytes, times, attributes_bytes))


# Span names are few (one per kind of span): each is framed once.
_NAMES: dict[str, bytes] = {}
_NAMES_LIMIT = 1_000


def name_field(name: str) -> bytes:
    """A span's name, framed as its field."""
    framed = _NAMES.get(name)
    if framed is None:
        framed = _string_field(_NAME, name)
        if len(_NAMES) < _NAMES_LIMIT:
            _NAMES[name] = framed
    return framed


_U64 = (1 << 64) - 1
_IDS = struct.Struct(">BBQQBBQ")
_IDS_AND_PARENT = struct.Struct(">BBQQBBQBBQ")
_IDS_TAG_1 = _TRACE_ID << 3 | 2
_IDS_TAG_2 = _SPAN_ID << 3 | 2
_PARENT_TAG = bytes((_PARENT_SPAN_ID << 3 | 2, 8))
_FIXED64_BE = struct.Struct(">Q")
# kind (a one-byte enum), start and end (fixed64, little-endian).
_TIMES = struct.Struct("<BBBQBQ")
_KIND_TAG = _KIND << 3
_START_TAG = _START << 3 | 1
_END_TAG = _END << 3 | 1


def resource(values: Mapping[str, AttributeValue]) -> bytes:
    """A Resource message (attributes = 1), unframed."""
    return attributes(1, values)


def scope(name: str, version: str) -> bytes:
    """An InstrumentationScope message (name = 1, version = 2), unframed."""
    return _string_field(1, name) + (_string_field(2, version) if version else b"")


def export_request(resource_bytes: bytes, scope_bytes: bytes, spans: Iterable[bytes]) -> bytes:
    """ExportTraceServiceRequest { resource_spans = 1 { resource = 1, scope_spans = 2
    { scope = 1, spans = 2 } } }."""
    scope_spans = _bytes_field(1, scope_bytes) + b"".join(_bytes_field(2, s) for s in spans)
    resource_spans = _bytes_field(1, resource_bytes) + _bytes_field(2, scope_spans)
    return _bytes_field(1, resource_spans)
