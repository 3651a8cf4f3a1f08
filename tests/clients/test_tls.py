"""TLS and mutual TLS from the client's side, with the gateway's own certificates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infergate.clients import NO_RETRY, AsyncAdminClient, AsyncClient, Tls, Unavailable
from tests.admin.certs import self_signed
from tests.admin.conftest import TOKEN, start

X = {"x": np.zeros((1, 64), np.float32)}


async def test_tls_and_mutual_tls(repo: Path, tmp_path: Path) -> None:
    server_pair = self_signed(tmp_path / "pki", "server", server=True)
    client_pair = self_signed(tmp_path / "pki", "client", server=False)

    server = await start(repo, tls_cert=server_pair.cert, tls_key=server_pair.key)
    try:
        for tls in (Tls(ca=server_pair.cert), Tls(ca=server_pair.cert.read_bytes())):
            async with AsyncClient(server.address, tls=tls) as client:
                assert (await client.infer("digits", X))["y"].shape == (1, 10)
        async with AsyncAdminClient(server.address, TOKEN, tls=Tls(ca=str(server_pair.cert))) as a:
            assert "digits" in {m.name for m in await a.list_models()}
        # The system's roots do not know a self-signed certificate; nor does plain text.
        for system_roots in (True, None):
            refused = AsyncClient(server.address, tls=system_roots, retry=NO_RETRY, timeout_s=5)
            async with refused:
                with pytest.raises(Unavailable):
                    await refused.is_server_live()
    finally:
        await server.stop()

    server = await start(
        repo,
        tls_cert=server_pair.cert,
        tls_key=server_pair.key,
        tls_client_ca=client_pair.cert,
    )
    try:
        anonymous = Tls(ca=server_pair.cert)
        async with AsyncClient(server.address, tls=anonymous, retry=NO_RETRY, timeout_s=5) as c:
            with pytest.raises(Unavailable):
                await c.is_server_live()
        known = Tls(ca=server_pair.cert, cert=client_pair.cert, key=client_pair.key)
        async with AsyncClient(server.address, tls=known) as client:
            assert await client.is_server_live()
    finally:
        await server.stop()


def test_incomplete_tls_settings_are_refused(tmp_path: Path) -> None:
    pair = self_signed(tmp_path, "client", server=False)
    with pytest.raises(ValueError, match="both"):
        Tls(cert=pair.cert).credentials()
    with pytest.raises(OSError):
        Tls(ca=tmp_path / "missing.pem").credentials()
    with pytest.raises(ValueError, match="not both"):
        AsyncClient("127.0.0.1:1", tls=True, credentials=Tls().credentials())
