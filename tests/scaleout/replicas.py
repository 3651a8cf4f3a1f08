"""Helpers for the registry tests: gateway replicas on one repository and one Redis,
and the calls the tests make on them."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from infergate.clients import build_request
from infergate.clients.admin_client import AsyncAdminClient
from infergate.gateway.server import GatewayServer
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.protocol import model_config_pb2 as mc
from infergate.settings import Settings
from tests.conftest import DEMO_REPOSITORY

DIGITS_ONNX = DEMO_REPOSITORY / "digits" / "1" / "model.onnx"
# How long a registration on one replica may take to be served by another, on this
# busy 2-core machine: the event arrives in milliseconds, digits loads in about 0.1 s.
PROPAGATION_BOUND_S = 10.0


def shared_repository(root: Path) -> Path:
    """A repository holding digits only: replicas start in about a second."""
    repo = root / "shared-repository"
    shutil.copytree(DEMO_REPOSITORY / "digits", repo / "digits")
    return repo


def replica_settings(repo: Path, redis_url: str, replica_id: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_repository": repo,
        "port": 0,
        "metrics_port": 0,
        "shutdown_grace_s": 1.0,
        "insecure_admin": True,
        "backends": ("onnxruntime",),
        "cache_redis_url": redis_url,
        # Generous for a busy test machine; the bounds are tested on the store itself.
        "cache_redis_timeout_ms": 500,
        "cache_redis_connect_timeout_ms": 500,
        "registry_redis_url": redis_url,
        "replica_id": replica_id,
        "registry_heartbeat_s": 0.2,
        **overrides,
    }
    return Settings(**values)


async def start_replica(
    repo: Path, redis_url: str, replica_id: str, **overrides: Any
) -> GatewayServer:
    server = GatewayServer(replica_settings(repo, redis_url, replica_id, **overrides))
    await server.start()
    return server


def digits_config(name: str, max_batch_size: int = 64) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    config.input.add(name="x", data_type=mc.TYPE_FP32, dims=[64])
    config.output.add(name="y", data_type=mc.TYPE_FP32, dims=[10])
    config.response_cache.enable = True
    return config


async def register_digits(
    address: str,
    name: str,
    *,
    version: str = "",
    max_batch_size: int = 64,
    wait_replicas_s: float = 0.0,
) -> apb.RegisterModelResponse:
    async with AsyncAdminClient(address) as admin:
        response: apb.RegisterModelResponse = await admin.register(
            name,
            {"model.onnx": DIGITS_ONNX},
            digits_config(name, max_batch_size),
            version,
            wait_replicas_s=wait_replicas_s,
        )
        return response


async def ready(address: str, name: str, version: str = "") -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answer = await stub.ModelReady(pb.ModelReadyRequest(name=name, version=version))
    return bool(answer.ready)


async def served_max_batch_size(address: str, name: str) -> int:
    """The model's max_batch_size in effect there; -1 while it is not serving."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            answer = await stub.ModelConfig(pb.ModelConfigRequest(name=name))
        except grpc.aio.AioRpcError:
            return -1
    return int(answer.config.max_batch_size)


async def infer(address: str, name: str, x: np.ndarray) -> pb.ModelInferResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response: pb.ModelInferResponse = await stub.ModelInfer(
            build_request(name, {"x": x}), timeout=10
        )
        return response


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = PROPAGATION_BOUND_S
) -> float:
    """Poll `check` until it holds; the seconds it took. AssertionError at the timeout."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.02)
