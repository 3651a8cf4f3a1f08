"""Retries: only calls safe to repeat, only on UNAVAILABLE, with backoff, within the deadline.

A stand-in server answers UNAVAILABLE a set number of times before it answers for real,
and counts what reached it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
import pytest

from infergate.clients import (
    NO_RETRY,
    AdminClient,
    AsyncAdminClient,
    AsyncClient,
    Client,
    InvalidInput,
    RetryPolicy,
    Unavailable,
)
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import inference_pb2 as pb

FAST = RetryPolicy(attempts=4, initial_backoff_s=0.01, max_backoff_s=0.02)
X = {"x": np.zeros((1, 4), np.float32)}


class Flaky:
    """Fails each method `failures` times (with `code`) before it answers."""

    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE):
        self.failures = failures
        self.code = code
        self.calls: collections.Counter[str] = collections.Counter()

    def handler(self, method: str, answer: Callable[[Any], Any]) -> Callable[..., Any]:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self.calls[method] += 1
            if self.calls[method] <= self.failures:
                await context.abort(self.code, f"not yet ({self.calls[method]})")
            return answer(request)

        return handle


Methods = dict[str, tuple[Any, Any, Callable[[Any], Any]]]  # name: request, response, answer


def _service(flaky: Flaky, service: str, methods: Methods) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        service,
        {
            name: grpc.unary_unary_rpc_method_handler(
                flaky.handler(name, answer),
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )
            for name, (request_type, response_type, answer) in methods.items()
        },
    )


@pytest.fixture
async def flaky_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Flaky]]:
    flaky = Flaky(getattr(request, "param", 2))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            _service(
                flaky,
                "inference.GRPCInferenceService",
                {
                    "ServerLive": (
                        pb.ServerLiveRequest,
                        pb.ServerLiveResponse,
                        lambda r: pb.ServerLiveResponse(live=True),
                    ),
                    "ModelInfer": (
                        pb.ModelInferRequest,
                        pb.ModelInferResponse,
                        lambda r: pb.ModelInferResponse(model_name=r.model_name),
                    ),
                },
            ),
            _service(
                flaky,
                "infergate.admin.v1.ModelAdmin",
                {
                    "ListModels": (
                        apb.ListModelsRequest,
                        apb.ListModelsResponse,
                        lambda r: apb.ListModelsResponse(),
                    ),
                    "UnregisterModel": (
                        apb.UnregisterModelRequest,
                        apb.UnregisterModelResponse,
                        lambda r: apb.UnregisterModelResponse(),
                    ),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", flaky
    finally:
        await server.stop(None)


async def test_safe_calls_are_retried_until_they_succeed(flaky_server: tuple[str, Flaky]) -> None:
    address, flaky = flaky_server
    async with AsyncClient(address, retry=FAST) as client:
        assert await client.is_server_live()
    async with AsyncAdminClient(address, "t" * 16, retry=FAST) as admin:
        assert await admin.list_models() == []
    assert flaky.calls == {"ServerLive": 3, "ListModels": 3}


async def test_the_blocking_face_retries_alike(flaky_server: tuple[str, Flaky]) -> None:
    address, flaky = flaky_server
    with Client(address, retry=FAST) as client:
        assert await asyncio.to_thread(client.is_server_live)
    assert flaky.calls == {"ServerLive": 3}


async def test_inference_is_retried_only_when_the_caller_allows_it(
    flaky_server: tuple[str, Flaky],
) -> None:
    address, flaky = flaky_server
    async with AsyncClient(address, retry=FAST) as client:
        with pytest.raises(Unavailable, match=r"not yet \(1\)"):
            await client.infer("m", X)
        assert flaky.calls["ModelInfer"] == 1
        assert await client.infer("m", X, retry=True) == {}
    assert flaky.calls["ModelInfer"] == 3


async def test_calls_that_change_state_are_never_retried(flaky_server: tuple[str, Flaky]) -> None:
    address, flaky = flaky_server
    with AdminClient(address, "t" * 16, retry=FAST) as admin, pytest.raises(Unavailable):
        await asyncio.to_thread(admin.unregister, "m")
    assert flaky.calls == {"UnregisterModel": 1}


@pytest.mark.parametrize("flaky_server", [5], indirect=True)
async def test_retries_stop_after_the_attempts_allowed(flaky_server: tuple[str, Flaky]) -> None:
    address, flaky = flaky_server
    async with AsyncClient(address, retry=FAST) as client:
        with pytest.raises(Unavailable, match=r"\(4\)"):
            await client.is_server_live()
    async with AsyncClient(address, retry=NO_RETRY) as client:
        with pytest.raises(Unavailable, match=r"\(5\)"):
            await client.is_server_live()
    assert flaky.calls["ServerLive"] == 5


@pytest.mark.parametrize("flaky_server", [100], indirect=True)
async def test_retries_stay_within_the_deadline(flaky_server: tuple[str, Flaky]) -> None:
    address, flaky = flaky_server
    patient = RetryPolicy(attempts=100, initial_backoff_s=0.05, max_backoff_s=0.05)
    async with AsyncClient(address, retry=patient) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await client.is_server_live(timeout_s=0.3)
        assert time.monotonic() - started < 0.6
    assert 2 <= flaky.calls["ServerLive"] < 100


async def test_other_failures_are_not_retried(flaky_server: tuple[str, Flaky]) -> None:
    address, flaky = flaky_server
    flaky.code = grpc.StatusCode.INVALID_ARGUMENT
    async with AsyncClient(address, retry=FAST) as client:
        with pytest.raises(InvalidInput):
            await client.is_server_live()
    assert flaky.calls["ServerLive"] == 1


def test_the_policy_backs_off_exponentially_with_jitter() -> None:
    policy = RetryPolicy(attempts=10, initial_backoff_s=0.1, max_backoff_s=0.5, multiplier=2)
    unavailable = grpc.StatusCode.UNAVAILABLE
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)):
        delays = [policy.delay_s(attempt, unavailable, True, None) for _ in range(200)]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert max(d for d in delays if d is not None) > ceiling / 2  # spread, not fixed
    assert policy.delay_s(10, unavailable, True, None) is None
    assert policy.delay_s(1, unavailable, False, None) is None
    assert policy.delay_s(1, grpc.StatusCode.INTERNAL, True, None) is None
    assert policy.delay_s(1, unavailable, True, 0.0) is None
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
