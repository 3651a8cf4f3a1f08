"""Who may call what: admin tokens, the insecure loopback mode, inference tokens, TLS."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infergate.clients import AsyncClient
from infergate.clients.admin_client import AdminError, AsyncAdminClient
from infergate.gateway.auth import AuthPolicy, is_loopback
from infergate.gateway.server import GatewayServer
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.schema.errors import PermissionDenied, Unauthenticated
from infergate.settings import Settings, SettingsError
from tests.admin.certs import self_signed
from tests.admin.conftest import TOKEN, gateway_backends, start

INFERENCE_TOKEN = "inference-token-for-tests-98765"
ADMIN_METHOD = "/infergate.admin.v1.ModelAdmin/ListModels"
LOAD_METHOD = "/inference.GRPCInferenceService/RepositoryModelLoad"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


# ---- the policy, on its own ----------------------------------------------------------


def test_admin_without_a_token_is_disabled_with_a_hint() -> None:
    policy = AuthPolicy.from_settings(Settings())
    for method in (ADMIN_METHOD, LOAD_METHOD):
        error = policy.check(method, bearer("anything-at-all-0123456789"))
        assert isinstance(error, PermissionDenied)
        assert "INFERGATE_ADMIN_TOKEN" in str(error) and "--insecure-admin" in str(error)
    assert policy.check(INFER_METHOD, None) is None


def test_bearer_tokens_are_checked() -> None:
    policy = AuthPolicy.from_settings(Settings(admin_token=TOKEN))
    assert policy.check(ADMIN_METHOD, bearer(TOKEN)) is None
    assert policy.check(ADMIN_METHOD, [("authorization", f"bearer  {TOKEN} ")]) is None
    refused = {
        "no metadata": None,
        "no authorization": [("x-other", "1")],
        "wrong token": bearer(TOKEN + "x"),
        "prefix of the token": bearer(TOKEN[:-1]),
        "another scheme": [("authorization", f"Basic {TOKEN}")],
        "scheme only": [("authorization", "Bearer")],
    }
    for what, metadata in refused.items():
        assert isinstance(policy.check(ADMIN_METHOD, metadata), Unauthenticated), what


def test_an_inference_token_guards_everything_but_health() -> None:
    policy = AuthPolicy.from_settings(Settings(admin_token=TOKEN, inference_token=INFERENCE_TOKEN))
    assert isinstance(policy.check(INFER_METHOD, None), Unauthenticated)
    assert policy.check(INFER_METHOD, bearer(INFERENCE_TOKEN)) is None
    assert policy.check(INFER_METHOD, bearer(TOKEN)) is None  # admins may infer
    assert isinstance(policy.check(ADMIN_METHOD, bearer(INFERENCE_TOKEN)), Unauthenticated)
    assert policy.check(HEALTH_METHOD, None) is None


def test_unsafe_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="loopback"):
        AuthPolicy.from_settings(Settings(host="0.0.0.0", insecure_admin=True))
    with pytest.raises(SettingsError, match="at least 16"):
        AuthPolicy.from_settings(Settings(admin_token="short"))
    with pytest.raises(SettingsError, match="printable"):
        AuthPolicy.from_settings(Settings(admin_token="with a space in it 0123456789"))
    with pytest.raises(SettingsError, match="cannot read"):
        AuthPolicy.from_settings(Settings(admin_token_file=tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="empty"):
        AuthPolicy.from_settings(Settings(admin_token_file=tmp_path / "empty"))
    (tmp_path / "token").write_text(TOKEN + "\n")
    policy = AuthPolicy.from_settings(Settings(admin_token_file=tmp_path / "token"))
    assert policy.check(ADMIN_METHOD, bearer(TOKEN)) is None
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))


def test_the_token_never_shows_in_the_settings_repr() -> None:
    assert TOKEN not in repr(Settings(admin_token=TOKEN, inference_token=INFERENCE_TOKEN))


# ---- through a real server -----------------------------------------------------------


async def test_without_a_token_the_admin_service_refuses_and_inference_works(
    repo: Path,
) -> None:
    server = await start(repo, admin_token="")
    try:
        async with AsyncAdminClient(server.address, TOKEN) as admin:
            with pytest.raises(AdminError) as refused:
                await admin.list_models()
        assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert "INFERGATE_ADMIN_TOKEN" in refused.value.message
        async with AsyncClient(server.address) as client:
            y = (await client.infer("digits", {"x": np.zeros((1, 64), np.float32)}))["y"]
            assert y.shape == (1, 10)
    finally:
        await server.stop()


async def test_insecure_admin_on_loopback_needs_no_token(repo: Path) -> None:
    server = await start(repo, admin_token="", insecure_admin=True)
    try:
        async with AsyncAdminClient(server.address) as admin:
            assert [m.name for m in await admin.list_models()] == ["digits"]
    finally:
        await server.stop()
    with pytest.raises(SettingsError, match="loopback"):
        GatewayServer(
            Settings(host="0.0.0.0", port=0, insecure_admin=True), backends=gateway_backends()
        )


async def test_an_inference_token_is_enforced_end_to_end(repo: Path) -> None:
    server = await start(repo, inference_token=INFERENCE_TOKEN)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ModelReady(pb.ModelReadyRequest(name="digits"))
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            ready = await stub.ModelReady(
                pb.ModelReadyRequest(name="digits"), metadata=bearer(INFERENCE_TOKEN)
            )
            assert ready.ready
            # Streams are refused the same way.
            stream = stub.ModelStreamInfer(iter([pb.ModelInferRequest(model_name="digits")]))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stream:
                    pass
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert status.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop()


async def test_tls_with_and_without_client_certificates(repo: Path, tmp_path: Path) -> None:
    server_pair = self_signed(tmp_path / "pki", "server", server=True)
    client_pair = self_signed(tmp_path / "pki", "client", server=False)
    request = pb.ServerLiveRequest()

    server = await start(repo, tls_cert=server_pair.cert, tls_key=server_pair.key)
    try:
        trusted = grpc.ssl_channel_credentials(root_certificates=server_pair.cert.read_bytes())
        async with grpc.aio.secure_channel(server.address, trusted) as channel:
            live = await pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(request)
            assert live.live
        async with AsyncAdminClient(server.address, TOKEN, credentials=trusted) as admin:
            assert [m.name for m in await admin.list_models()] == ["digits"]
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as plaintext:
                await pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(request, timeout=5)
            assert plaintext.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop()

    server = await start(
        repo,
        tls_cert=server_pair.cert,
        tls_key=server_pair.key,
        tls_client_ca=client_pair.cert,
    )
    try:
        anonymous = grpc.ssl_channel_credentials(root_certificates=server_pair.cert.read_bytes())
        async with grpc.aio.secure_channel(server.address, anonymous) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(request, timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        known = grpc.ssl_channel_credentials(
            root_certificates=server_pair.cert.read_bytes(),
            private_key=client_pair.key.read_bytes(),
            certificate_chain=client_pair.cert.read_bytes(),
        )
        async with grpc.aio.secure_channel(server.address, known) as channel:
            assert (await pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(request)).live
    finally:
        await server.stop()


def test_incomplete_tls_settings_are_refused(tmp_path: Path) -> None:
    pair = self_signed(tmp_path, "server", server=True)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for settings, message in (
        (Settings(tls_cert=pair.cert), "both"),
        (Settings(tls_client_ca=pair.cert), "needs --tls-cert"),
        (Settings(tls_cert=pair.cert, tls_key=not_pem), "not a PEM"),
        (Settings(tls_cert=pair.cert, tls_key=tmp_path / "nope"), "cannot read"),
    ):
        with pytest.raises(SettingsError, match=message):
            GatewayServer(settings.with_overrides(port=0), backends=gateway_backends())
