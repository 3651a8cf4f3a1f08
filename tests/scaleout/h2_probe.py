"""The bytes of deploy/haproxy/haproxy.cfg's health check, built from what they mean.

HAProxy 2.6 cannot send a gRPC request body from http-check (it is zero bytes, and
a zero byte ends a string in its config), so the config's tcp-check speaks HTTP/2
itself: the connection preface, an empty SETTINGS frame, a HEADERS frame for
POST /grpc.health.v1.Health/Check and a DATA frame with an empty HealthCheckRequest;
it expects the DATA frame of a response whose status is SERVING.
"""

from __future__ import annotations

import re

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _SETTINGS = 0, 1, 4
_END_STREAM, _END_HEADERS = 0x1, 0x4
# HPACK static table (RFC 7541, appendix A).
_METHOD_POST, _SCHEME_HTTP = 0x83, 0x86  # indexed header fields
_AUTHORITY, _PATH = 1, 4  # names, for literals without indexing
SERVING, NOT_SERVING = 1, 2


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def literal(name: int | str, value: str) -> bytes:
    """A header field literal without indexing, without Huffman coding (short strings)."""
    encoded = value.encode()
    assert len(encoded) < 127
    # An int is a static-table name index below 15 (0000 + index); else a new name.
    head = bytes([name]) if isinstance(name, int) else b"\x00" + bytes([len(name)]) + name.encode()
    return head + bytes([len(encoded)]) + encoded


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def health_check_request() -> bytes:
    block = (
        bytes([_METHOD_POST, _SCHEME_HTTP])
        + literal(_PATH, "/grpc.health.v1.Health/Check")
        + literal(_AUTHORITY, "gateway")
        + literal("content-type", "application/grpc")
        + literal("te", "trailers")
    )
    return (
        PREFACE
        + frame(_SETTINGS, 0, 0, b"")
        + frame(_HEADERS, _END_HEADERS, 1, block)
        + frame(_DATA, _END_STREAM, 1, grpc_message(b""))  # service "": the server
    )


def health_check_answer(status: int) -> bytes:
    """The DATA frame of HealthCheckResponse{status}: field 1, varint."""
    return frame(_DATA, 0, 1, grpc_message(bytes([0x08, status])))


def config_check(config: str) -> tuple[bytes, bytes]:
    """What a haproxy.cfg's tcp-check sends, and the bytes it expects in the answer."""
    sent = b"".join(
        bytes.fromhex(hex_) for hex_ in re.findall(r"^\s*tcp-check send-binary (\S+)", config, re.M)
    )
    (expected,) = re.findall(r"^\s*tcp-check expect (?:min-recv \d+ )?binary (\S+)", config, re.M)
    return sent, bytes.fromhex(expected)


def config_frame_pattern(config: str) -> re.Pattern[str]:
    """The regex the config's first expect waits for, on the answer's hex (rbinary)."""
    (pattern,) = re.findall(r"^\s*tcp-check expect rbinary (\S+)", config, re.M)
    return re.compile(pattern)
