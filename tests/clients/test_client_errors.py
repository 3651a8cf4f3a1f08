"""Each way a call fails comes back as its own exception, with the status and message."""

from __future__ import annotations

import asyncio
import pickle
import socket
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.clients import (
    AdminError,
    AlreadyExists,
    AsyncAdminClient,
    AsyncClient,
    Client,
    ClientError,
    DeadlineExceeded,
    InferenceError,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    PermissionDenied,
    RetryPolicy,
    StreamError,
    Unauthenticated,
    Unavailable,
    exceptions,
)
from tests.admin.conftest import TOKEN, start
from tests.clients.conftest import DIGITS_ONNX, FACES, SLOW_BATCH_S, Face, Served, admin_face

X = {"x": np.zeros((1, 64), np.float32)}


async def test_an_unknown_model_is_model_not_found(client: Face) -> None:
    with pytest.raises(ModelNotFound) as caught:
        await client("infer", "no_such_model", X)
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert "no_such_model" in caught.value.message
    with pytest.raises(ModelNotFound):
        await client("model_metadata", "no_such_model")


async def test_a_wrong_datatype_is_invalid_input(client: Face) -> None:
    with pytest.raises(InvalidInput) as caught:
        await client("infer", "digits", {"x": np.zeros((1, 64), np.float64)})
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "FP64" in caught.value.message and "FP32" in caught.value.message


async def test_a_call_past_its_deadline_is_deadline_exceeded(client: Face) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        await client("infer", "slow", {"x": np.ones((1, 4), np.float32)}, timeout_s=0.05)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < SLOW_BATCH_S
    # The client's default deadline applies to calls not given their own.
    client.client.timeout_s = 0.05
    with pytest.raises(DeadlineExceeded):
        await client("infer", "slow", {"x": np.ones((1, 4), np.float32)})


async def test_a_full_queue_is_overloaded(served: Served) -> None:
    x = np.ones((1, 4), np.float32)
    async with AsyncClient(served.address) as client:
        running = asyncio.create_task(client.infer("small_queue", {"x": x}))
        await asyncio.sleep(0.1)  # running holds the model's one batch slot
        queued = asyncio.create_task(client.infer("small_queue", {"x": x + 1}))
        await asyncio.sleep(0.1)  # queued fills the queue
        with pytest.raises(Overloaded) as caught:
            await client.infer("small_queue", {"x": x + 2})
        assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queue_size" in caught.value.message
        await asyncio.gather(running, queued)


@pytest.mark.parametrize("face", FACES)
async def test_admin_calls_without_the_token_are_unauthenticated(face: str, served: Served) -> None:
    for token in (None, TOKEN + "-wrong"):
        admin = admin_face(face, served.address, token=token)
        try:
            with pytest.raises(Unauthenticated) as caught:
                await admin("list_models")
        finally:
            await admin.close()
        assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
        assert "token" in caught.value.message


async def test_an_inference_token_is_sent_when_given(repo: Path) -> None:
    inference_token = "inference-token-for-client-tests"
    server = await start(repo, inference_token=inference_token)
    try:
        async with AsyncClient(server.address) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.infer("digits", X)
        async with AsyncClient(server.address, inference_token) as client:
            assert (await client.infer("digits", X))["y"].shape == (1, 10)
        with Client(server.address, token=inference_token) as sync_client:
            assert await asyncio.to_thread(sync_client.is_model_ready, "digits")
    finally:
        await server.stop()


async def test_admin_calls_on_a_gateway_without_admin_are_permission_denied(repo: Path) -> None:
    server = await start(repo, admin_token="")
    try:
        async with AsyncAdminClient(server.address, TOKEN) as admin:
            with pytest.raises(PermissionDenied) as caught:
                await admin.list_models()
        assert "INFERGATE_ADMIN_TOKEN" in caught.value.message
    finally:
        await server.stop()


async def test_registering_an_existing_version_is_already_exists(admin: Face) -> None:
    await admin("register", "twice", {"model.onnx": DIGITS_ONNX}, version="3")
    with pytest.raises(AlreadyExists) as caught:
        await admin("register", "twice", {"model.onnx": DIGITS_ONNX}, version="3")
    assert caught.value.code is grpc.StatusCode.ALREADY_EXISTS


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_server_is_unavailable_after_the_retries() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    retry = RetryPolicy(attempts=3, initial_backoff_s=0.2, max_backoff_s=0.2)
    with Client(address, retry=retry) as client:
        with pytest.raises(Unavailable) as caught:
            client.is_server_live()
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(Unavailable):  # tried once (test_retry.py counts the attempts)
            client.infer("digits", X)


def test_every_error_is_a_client_error_with_its_code() -> None:
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        error = exceptions.error_for(code, "why")
        assert isinstance(error, ClientError)
        assert (error.code, error.message, str(error)) == (code, "why", f"{code.name}: why")
    assert exceptions.error_for(grpc.StatusCode.RESOURCE_EXHAUSTED, "").__class__ is Overloaded
    for error in (exceptions.error_for(grpc.StatusCode.NOT_FOUND, "m"), StreamError("failed")):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), copy.code, copy.message, str(copy)) == (
            type(error),
            error.code,
            error.message,
            str(error),
        )
    # The names the first client raised still catch everything.
    assert InferenceError is ClientError and AdminError is ClientError
