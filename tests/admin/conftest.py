"""Gateways with the admin RPC enabled, on port 0, over a temporary repository."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infergate.backends.base import Backend
from infergate.backends.discovery import discover
from infergate.clients import AsyncClient
from infergate.clients.admin_client import AsyncAdminClient
from infergate.gateway.server import GatewayServer
from infergate.settings import Settings
from tests.conftest import DEMO_REPOSITORY
from tests.fake_backend import FakeBackend

TOKEN = "admin-token-for-tests-0123456789"


def gateway_backends() -> dict[str, Backend]:
    """ONNX Runtime for real models, the fake backend where a test needs slow ones."""
    return {**discover(["onnxruntime"]).backends, "fake": FakeBackend()}


def settings(repo: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_repository": repo,
        "port": 0,
        "metrics_port": 0,
        "shutdown_grace_s": 1.0,
        "admin_token": TOKEN,
        **overrides,
    }
    return Settings(**values)


async def start(
    repo: Path, backends: Mapping[str, Backend] | None = None, **overrides: Any
) -> GatewayServer:
    server = GatewayServer(settings(repo, **overrides), backends=backends or gateway_backends())
    await server.start()
    return server


async def wait_until(condition: Callable[[], bool], failure: str, timeout_s: float = 10.0) -> None:
    """Poll the event loop's state until condition holds; fail with `failure` at the timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, failure
        await asyncio.sleep(0.02)


@dataclass
class Served:
    server: GatewayServer
    repo: Path

    @property
    def address(self) -> str:
        return self.server.address


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository holding the digits demo model, which must keep serving throughout."""
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPOSITORY / "digits", repo / "digits")
    return repo


@pytest.fixture
async def served(repo: Path) -> AsyncIterator[Served]:
    server = await start(repo, max_inflight_batches=1)
    try:
        yield Served(server, repo)
    finally:
        await server.stop()


@pytest.fixture
async def admin(served: Served) -> AsyncIterator[AsyncAdminClient]:
    async with AsyncAdminClient(served.address, TOKEN) as client:
        yield client


@pytest.fixture
async def client(served: Served) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(served.address) as c:
        yield c
