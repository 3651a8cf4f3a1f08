"""Shared fixtures: model repositories and an in-process gateway on port 0."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infergate.gateway.server import GatewayServer
from infergate.settings import Settings
from tests import onnx_models
from tests.otlp_receiver import Receiver

# Gateways that tests start as processes (the CLI) serve no metrics unless a test
# asks: the default port 8002 may be taken on a developer's machine.
os.environ.setdefault("INFERGATE_METRICS_PORT", "0")

ROOT = Path(__file__).resolve().parents[1]
DEMO_REPOSITORY = ROOT / "models" / "repository"
SMALL_DEMO_MODELS = ("digits", "cnn")


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A model repository with the small demo models plus a two-input model."""
    repo = tmp_path / "repository"
    for name in SMALL_DEMO_MODELS:
        shutil.copytree(DEMO_REPOSITORY / name, repo / name)
    onnx_models.add_model(repo / "addsub" / "1" / "model.onnx")  # no config: derived
    return repo


@pytest.fixture
async def gateway(repository: Path) -> AsyncIterator[GatewayServer]:
    """A started gateway serving `repository` on a free loopback port."""
    server = GatewayServer(
        Settings(metrics_port=0, model_repository=repository, port=0, shutdown_grace_s=1.0)
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real OTLP/gRPC trace receiver on loopback."""
    r = Receiver()
    await r.start()
    yield r
    await r.stop()
