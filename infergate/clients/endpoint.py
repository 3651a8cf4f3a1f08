"""The two faces of a client, and how each RPC becomes a method of both.

A face is a connection to one gRPC service: SyncEndpoint blocks, AsyncEndpoint is
awaited. `sync_rpc(build)` and `async_rpc(build)` turn a function that builds a Call
into a method of each face with the same parameters, so a client class is a list of
its calls:

    class Client(SyncEndpoint):
        infer = sync_rpc(inference_calls.infer)

    class AsyncClient(AsyncEndpoint):
        infer = async_rpc(inference_calls.infer)
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, ClassVar, Concatenate, ParamSpec, Self, TypeVar

import grpc

from infergate.clients.connection import Connection, Tls
from infergate.clients.retry import RetryPolicy
from infergate.clients.transport import AsyncTransport, Call, SyncTransport, generic_call

P = ParamSpec("P")
R = TypeVar("R")


class Endpoint:
    """What both faces take: where to connect and how.

    address: host:port of the gateway.
    token: sent as `authorization: Bearer <token>` on every call (the admin token for
        the admin service; the inference token, or the admin one, where inference
        needs one).
    timeout_s: the deadline of every call that is not given its own (`timeout_s=` on
        the call); None waits as long as it takes. Uploads and streams have no default
        deadline.
    tls: True for TLS with the system's trusted roots, or a Tls (own CA, mutual TLS);
        credentials: grpc channel credentials made elsewhere (instead of tls).
    retry: how calls that are safe to repeat are retried on UNAVAILABLE (RetryPolicy;
        NO_RETRY never retries).
    metadata: more (key, value) metadata for every call (a traceparent, say).
    channel_options: gRPC channel arguments, over the client's own (256 MiB messages).
    """

    _stub_type: ClassVar[type[Any]]

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        timeout_s: float | None = 30.0,
        tls: Tls | bool | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        retry: RetryPolicy | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._open(
            Connection.create(
                address,
                token,
                tls=tls,
                credentials=credentials,
                retry=retry or RetryPolicy(),
                metadata=metadata,
                channel_options=channel_options,
            )
        )

    def _open(self, connection: Connection) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"


def _method_signature(build: Callable[..., Any]) -> inspect.Signature:
    """The build function's signature with `self` in front, returning what the call's
    answer is rather than the Call: what help() shows."""
    signature = inspect.signature(build)
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    returns = signature.return_annotation
    if isinstance(returns, str) and returns.startswith("Call[") and returns.endswith("]"):
        returns = returns[len("Call[") : -1]
    return signature.replace(
        parameters=[this, *signature.parameters.values()], return_annotation=returns
    )


def sync_rpc(build: Callable[P, Call[R]]) -> Callable[Concatenate[SyncEndpoint, P], R]:
    """A blocking method that builds the call with `build` and runs it."""

    def method(self: SyncEndpoint, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._transport.run(build(*args, **kwargs), self.timeout_s)

    _describe(method, build)
    return method


def async_rpc(
    build: Callable[P, Call[R]], *, build_in_thread: bool = False
) -> Callable[Concatenate[AsyncEndpoint, P], Coroutine[Any, Any, R]]:
    """A coroutine method that builds the call with `build` and awaits it.

    build_in_thread: build it on a worker thread, for builders that read files (an
    upload hashes its artifacts first), so the event loop goes on meanwhile.
    """

    async def method(self: AsyncEndpoint, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if build_in_thread:
            call = await asyncio.to_thread(build, *args, **kwargs)
        else:
            call = build(*args, **kwargs)
        return await self._transport.run(call, self.timeout_s)

    _describe(method, build)
    return method


def _describe(method: Callable[..., Any], build: Callable[..., Any]) -> None:
    method.__name__ = build.__name__
    method.__doc__ = build.__doc__
    method.__signature__ = _method_signature(build)  # type: ignore[attr-defined]


class SyncEndpoint(Endpoint):
    """The blocking face; thread-safe (gRPC channels are). Close it, or use `with`."""

    _transport: SyncTransport

    def _open(self, connection: Connection) -> None:
        self._transport = SyncTransport(connection, self._stub_type)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    call = sync_rpc(generic_call)


class AsyncEndpoint(Endpoint):
    """The asyncio face, over grpc.aio: make it and use it in one event loop.
    Close it (`await close()`), or use `async with`."""

    _transport: AsyncTransport

    def _open(self, connection: Connection) -> None:
        self._transport = AsyncTransport(connection, self._stub_type)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    call = async_rpc(generic_call)
