"""TLS for the gRPC listener: the server's certificate, and optionally client certificates."""

from __future__ import annotations

from pathlib import Path

import grpc

from infergate.settings import Settings, SettingsError


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Credentials for the listener; None serves plaintext. SettingsError when incomplete."""
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if cert is None and key is None:
        if client_ca is not None:
            raise SettingsError("--tls-client-ca needs --tls-cert and --tls-key too")
        return None
    if cert is None or key is None:
        raise SettingsError("TLS needs both --tls-cert and --tls-key")
    return grpc.ssl_server_credentials(
        [(_pem(key, "--tls-key"), _pem(cert, "--tls-cert"))],
        root_certificates=_pem(client_ca, "--tls-client-ca") if client_ca else None,
        # With a client CA, a client without a certificate it signed is refused in
        # the handshake, before any RPC.
        require_client_auth=client_ca is not None,
    )


def _pem(path: Path, flag: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{flag}: cannot read {path}: {exc}") from exc
    # gRPC reports a bad file only at the first handshake, and vaguely: check here.
    if b"-----BEGIN " not in data:
        raise SettingsError(f"{flag}: {path} is not a PEM file")
    return data
