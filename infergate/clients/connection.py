"""Where and how a client connects: the address, TLS, the token, channel options.

The same settings make a blocking channel or an asyncio one, so both faces of a
client connect alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from infergate.clients.retry import RetryPolicy

# Tensors of hundreds of MB are legitimate; the gateway's own default limit is as large.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_DEFAULT_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)

Metadata = tuple[tuple[str, str], ...]
Pem = Path | str | bytes


@dataclass(frozen=True)
class Tls:
    """TLS to the gateway: the CA that signed its certificate (None: the system's
    trusted roots) and, for mutual TLS, this client's certificate and key. Each is PEM
    bytes or the path of a PEM file. `server_name`: the name the certificate must carry,
    when it is not the address's host (connecting by IP to a certificate for a name)."""

    ca: Pem | None = None
    cert: Pem | None = None
    key: Pem | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials; OSError if a file cannot be read."""
        if (self.cert is None) != (self.key is None):
            raise ValueError("mutual TLS needs both the client's cert and its key")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.ca),
            private_key=_pem(self.key),
            certificate_chain=_pem(self.cert),
        )


def _pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def bearer(token: str | None) -> Metadata:
    """The metadata that carries a token, as the gateway reads it (gateway/auth.py)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


@dataclass(frozen=True)
class Connection:
    address: str
    metadata: Metadata
    retry: RetryPolicy
    credentials: grpc.ChannelCredentials | None = None
    options: tuple[tuple[str, Any], ...] = _DEFAULT_OPTIONS

    @classmethod
    def create(
        cls,
        address: str,
        token: str | None,
        *,
        tls: Tls | bool | None,
        credentials: grpc.ChannelCredentials | None,
        retry: RetryPolicy,
        metadata: Sequence[tuple[str, str]],
        channel_options: Sequence[tuple[str, Any]],
    ) -> Connection:
        if tls and credentials is not None:
            raise ValueError("give tls or credentials, not both")
        options: dict[str, Any] = dict(_DEFAULT_OPTIONS)
        if isinstance(tls, Tls):
            credentials = tls.credentials()
            if tls.server_name:
                options["grpc.ssl_target_name_override"] = tls.server_name
        elif tls:
            credentials = Tls().credentials()
        options.update(dict(channel_options))
        return cls(
            address,
            (*bearer(token), *metadata),
            retry,
            credentials,
            tuple(options.items()),
        )

    def channel(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.address, options=self.options)
        return grpc.secure_channel(self.address, self.credentials, options=self.options)

    def aio_channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.address, options=self.options)
        return grpc.aio.secure_channel(self.address, self.credentials, options=self.options)
