"""Gateways for the client tests: one in this process (every call, both faces), and one
started through the CLI for clients that live in other processes (generated stubs,
Node.js, the docs' examples, a client installed on its own)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infergate.backends.discovery import discover
from infergate.clients import AdminClient, AsyncAdminClient, AsyncClient, Client
from infergate.clients.endpoint import Endpoint, SyncEndpoint
from infergate.gateway.server import GatewayServer
from tests import onnx_models
from tests.admin.conftest import TOKEN, start
from tests.cli_gateway import CliGateway, cli_gateway
from tests.conftest import DEMO_REPOSITORY
from tests.fake_backend import FakeBackend, write_fake_model

DIGITS_ONNX = DEMO_REPOSITORY / "digits" / "1" / "model.onnx"
FACES = ("sync", "async")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "registry: installs packages from the package registry into a fresh virtual "
        "environment (needs the network; about half a minute)",
    )


def digits_repository(repo: Path) -> Path:
    """digits (FP32 in, FP32 out) and id_bytes (BYTES in, the same out)."""
    shutil.copytree(DEMO_REPOSITORY / "digits", repo / "digits")
    onnx_models.identity_model(repo / "id_bytes" / "1" / "model.onnx", "BYTES")
    return repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """digits and id_bytes, and two fake models (FP32 [n, 4], y = 2x): `slow` and
    `small_queue` (at most one request waiting)."""
    repo = digits_repository(tmp_path / "repo")
    write_fake_model(repo, "slow")
    write_fake_model(repo, "small_queue", queue_policy="max_queue_size: 1")
    return repo


@dataclass(frozen=True)
class Served:
    server: GatewayServer
    fake: FakeBackend

    @property
    def address(self) -> str:
        return self.server.address


# Seconds a batch of the fake models takes, set once they have loaded: the loader's
# warm-up and profiling calls (ten) would take as long each.
SLOW_BATCH_S = 0.5


@pytest.fixture
async def served(repo: Path) -> AsyncIterator[Served]:
    """A gateway in this process with the admin token TOKEN; the fake models take
    SLOW_BATCH_S a batch."""
    fake = FakeBackend()
    server = await start(repo, {**discover(["onnxruntime"]).backends, "fake": fake})
    for name in ("slow", "small_queue"):
        fake.loaded[name].delay_s = SLOW_BATCH_S
    try:
        yield Served(server, fake)
    finally:
        await server.stop()


class Face:
    """A client of either face, called the same way from an async test: a blocking
    client's calls run on a thread, as the server shares this test's event loop."""

    def __init__(self, client: Endpoint) -> None:
        self.client = client
        self.blocking = isinstance(client, SyncEndpoint)

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call: Callable[..., Any] = getattr(self.client, method)
        if self.blocking:
            return await asyncio.to_thread(call, *args, **kwargs)
        result: Awaitable[Any] = call(*args, **kwargs)
        return await result

    async def close(self) -> None:
        if isinstance(self.client, SyncEndpoint):
            self.client.close()
        else:
            await self.client.close()  # type: ignore[attr-defined]


def inference_face(face: str, address: str, **options: Any) -> Face:
    return Face(Client(address, **options) if face == "sync" else AsyncClient(address, **options))


def admin_face(face: str, address: str, **options: Any) -> Face:
    kind = AdminClient if face == "sync" else AsyncAdminClient
    return Face(kind(address, **options))


@pytest.fixture(params=FACES)
async def client(request: pytest.FixtureRequest, served: Served) -> AsyncIterator[Face]:
    face = inference_face(request.param, served.address)
    yield face
    await face.close()


@pytest.fixture(params=FACES)
async def admin(request: pytest.FixtureRequest, served: Served) -> AsyncIterator[Face]:
    face = admin_face(request.param, served.address, token=TOKEN)
    yield face
    await face.close()


# ---- a gateway process, for clients in other processes ---------------------------------


@dataclass(frozen=True)
class LiveGateway:
    gateway: CliGateway
    token: str
    folder: Path

    @property
    def url(self) -> str:
        return self.gateway.url

    def digits_case(self) -> Path:
        """A JSON file with an input for digits and the output the gateway gives for it."""
        x = np.linspace(-1.0, 1.0, 2 * 64, dtype=np.float32).reshape(2, 64)
        with Client(self.url) as client:
            y = client.infer("digits", {"x": x})["y"]
        path = self.folder / "digits_case.json"
        case = {"shape": list(x.shape), "x": x.ravel().tolist(), "y": y.ravel().tolist()}
        path.write_text(json.dumps(case))
        return path


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """`infergate serve` (digits, id_bytes; admin token TOKEN), shared by the tests of
    this folder that drive it from other processes. Each registers names of its own."""
    folder = tmp_path_factory.mktemp("live_gateway")
    repo = digits_repository(folder / "repo")
    token_file = folder / "admin_token"
    token_file.write_text(TOKEN)
    with cli_gateway(folder, repo, ["--admin-token-file", str(token_file)]) as gateway:
        yield LiveGateway(gateway, TOKEN, folder)
