"""Calls described once, carried out by a blocking or an asyncio transport.

A Call says everything about one RPC that does not depend on how it is awaited: the
method, the request, how to read the response, its deadline, whether it may be
repeated. The two transports differ only where they must (calling the stub, or
awaiting it; time.sleep or asyncio.sleep between attempts) and share the rest
(Attempts: deadline and retry decisions), so each RPC is written once, in
inference_calls and admin_calls, for both faces of the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

import grpc

from infergate.clients.connection import Connection
from infergate.clients.exceptions import ClientError, from_rpc_error
from infergate.clients.retry import RetryPolicy

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One RPC: `method` of the endpoint's service, `request` (a message, or an iterator
    of messages for a client-streaming method), `parse` of its response."""

    method: str
    request: Any
    parse: Callable[[Any], R]
    timeout_s: float | None = None  # None: see default_deadline
    repeatable: bool = True  # safe to send again when it failed unseen (retry.py)
    default_deadline: bool = True  # timeout_s None: the client's default; False: none

    def deadline_s(self, default_timeout_s: float | None) -> float | None:
        if self.timeout_s is not None:
            return self.timeout_s
        return default_timeout_s if self.default_deadline else None


def same_response(response: Any) -> Any:
    """`parse` for calls whose answer is the response message as it is."""
    return response


def generic_call(
    method: str, request: Any, *, repeatable: bool = False, timeout_s: float | None = None
) -> Call[Any]:
    """Any method of the service, by name, with its request message; the response comes
    back as the message it is. For methods the client does not wrap yet (a new admin
    call straight after `make proto`); `repeatable=True` lets it be retried."""
    return Call(method, request, same_response, timeout_s, repeatable)


class Attempts:
    """The attempts at one call: the time left before its deadline, and after a failure
    whether to try again (and after how long) or raise."""

    __slots__ = ("_attempt", "_call", "_deadline", "_retry")

    def __init__(self, call: Call[Any], retry: RetryPolicy, default_timeout_s: float | None):
        self._call = call
        self._retry = retry
        timeout_s = call.deadline_s(default_timeout_s)
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._attempt = 1

    def remaining_s(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def after_failure(self, error: ClientError) -> float:
        """The delay before the next attempt; raises `error` when there is none."""
        delay_s = self._retry.delay_s(
            self._attempt, error.code, self._call.repeatable, self.remaining_s()
        )
        if delay_s is None:
            _raise(error)
        self._attempt += 1
        return delay_s


def _raise(error: ClientError) -> NoReturn:
    # The gRPC exception it came from says nothing more, in a longer traceback.
    raise error from None


class SyncTransport:
    """Calls on a blocking channel; thread-safe, as gRPC channels are."""

    def __init__(self, connection: Connection, stub_type: type[Any]) -> None:
        self._channel = connection.channel()
        self._stub = stub_type(self._channel)
        self._metadata = connection.metadata
        self._retry = connection.retry

    def run(self, call: Call[R], default_timeout_s: float | None) -> R:
        invoke = getattr(self._stub, call.method)
        attempts = Attempts(call, self._retry, default_timeout_s)
        while True:
            try:
                response = invoke(
                    call.request, timeout=attempts.remaining_s(), metadata=self._metadata
                )
            except grpc.RpcError as exc:
                delay_s = attempts.after_failure(from_rpc_error(exc))
            else:
                return call.parse(response)
            time.sleep(delay_s)

    def stream(self, method: str, requests: Any, timeout_s: float | None) -> Iterator[Any]:
        """A streaming call's responses as they come; never retried. `requests`: an
        iterator of messages (bidirectional), or one message (server streaming)."""
        responses = getattr(self._stub, method)(
            requests, timeout=timeout_s, metadata=self._metadata
        )
        try:
            yield from responses
        except grpc.RpcError as exc:
            _raise(from_rpc_error(exc))
        finally:
            responses.cancel()  # the reader stopped early: end the call (no-op when done)

    def close(self) -> None:
        self._channel.close()


class AsyncTransport:
    """Calls on a grpc.aio channel; use it from one event loop."""

    def __init__(self, connection: Connection, stub_type: type[Any]) -> None:
        self._channel = connection.aio_channel()
        self._stub = stub_type(self._channel)
        self._metadata = connection.metadata
        self._retry = connection.retry

    async def run(self, call: Call[R], default_timeout_s: float | None) -> R:
        invoke = getattr(self._stub, call.method)
        attempts = Attempts(call, self._retry, default_timeout_s)
        while True:
            try:
                response = await invoke(
                    call.request, timeout=attempts.remaining_s(), metadata=self._metadata
                )
            except grpc.RpcError as exc:
                delay_s = attempts.after_failure(from_rpc_error(exc))
            else:
                return call.parse(response)
            await asyncio.sleep(delay_s)

    async def stream(
        self, method: str, requests: Any, timeout_s: float | None
    ) -> AsyncIterator[Any]:
        """A streaming call's responses as they come; never retried. `requests`: an
        iterable of messages (bidirectional), or one message (server streaming)."""
        responses = getattr(self._stub, method)(
            requests, timeout=timeout_s, metadata=self._metadata
        )
        try:
            async for response in responses:
                yield response
        except grpc.RpcError as exc:
            _raise(from_rpc_error(exc))
        finally:
            responses.cancel()

    async def close(self) -> None:
        await self._channel.close()
