"""Request bytes that do not parse: INVALID_ARGUMENT with the parser's reason.

grpc.aio parses a request before any handler runs, and a parser's DecodeError then
reaches the client as UNKNOWN "Unexpected <class 'DecodeError'>...": a hostile or
broken client's garbage looks like a server fault. For methods that take one
request, LenientDecoding hands the handler an Undecodable in its place, and the
handler answers INVALID_ARGUMENT; for methods that take a stream, the parser raises
while the servicer reads the stream, and a wrapper answers. A servicer method marked
@handles_undecodable does either itself (servicers/errors.py's grpc_errors,
ModelStreamInfer) and gets no wrapper.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

CODE = grpc.StatusCode.INVALID_ARGUMENT


def message(error: DecodeError) -> str:
    """The status message for request bytes that do not parse."""
    return f"the request's bytes do not parse: {error}"


F = TypeVar("F", bound=Callable[..., Any])


def handles_undecodable(behavior: F) -> F:
    """Mark a servicer method that answers an Undecodable request (or a DecodeError
    while reading its stream) itself: LenientDecoding then adds no wrapper to it, so
    hot methods pay nothing per call or per message."""
    behavior.handles_undecodable = True  # type: ignore[attr-defined]
    return behavior


def _handles_it(behavior: Any) -> bool:
    return bool(getattr(behavior, "handles_undecodable", False))


class Undecodable:
    """What a handler gets in place of a request whose bytes do not parse."""

    __slots__ = ("message",)

    def __init__(self, text: str) -> None:
        self.message = text


def lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return data if deserialize is None else deserialize(data)
        except DecodeError as exc:
            return Undecodable(message(exc))

    return parse


class LenientDecoding(grpc.GenericRpcHandler):
    """A service's handlers, those taking one request made to answer INVALID_ARGUMENT
    when its bytes do not parse. Wrapped handlers are kept per method, so a call
    costs one dictionary lookup here; a method marked @handles_undecodable gets no
    wrapper (on ModelInfer a wrapper coroutine cost about 1% of a request's
    instructions, python -m bench.instructions)."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        # Known methods only: a client's made-up method names are not remembered.
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            handler = _streamed(handler) if handler.request_streaming else _checked(handler)
            self._handlers[method] = handler
        return handler


def _checked(handler: Any) -> Any:
    """`handler` (one request) with a lenient parser and a check before its behaviour."""
    if handler.unary_unary is not None:
        behavior = handler.unary_unary
        if _handles_it(behavior):  # servicers.errors.grpc_errors, say
            return handler._replace(request_deserializer=lenient(handler.request_deserializer))

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if type(request) is Undecodable:
                await context.abort(CODE, request.message)
            return await behavior(request, context)

        return handler._replace(
            request_deserializer=lenient(handler.request_deserializer), unary_unary=unary_unary
        )
    streaming = handler.unary_stream
    if inspect.isasyncgenfunction(streaming):

        async def yielding(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if type(request) is Undecodable:
                await context.abort(CODE, request.message)
            async for response in streaming(request, context):
                yield response

        unary_stream: Callable[..., Any] = yielding
    else:  # a handler that writes its responses with context.write

        async def writing(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if type(request) is Undecodable:
                await context.abort(CODE, request.message)
            return await streaming(request, context)

        unary_stream = writing
    return handler._replace(
        request_deserializer=lenient(handler.request_deserializer), unary_stream=unary_stream
    )


def _streamed(handler: Any) -> Any:
    """`handler` (a stream of requests) answering INVALID_ARGUMENT when a message's
    bytes do not parse, unless its behaviour does so itself."""
    attribute = "stream_unary" if handler.stream_unary is not None else "stream_stream"
    behavior = getattr(handler, attribute)
    if _handles_it(behavior):
        return handler
    if inspect.isasyncgenfunction(behavior):

        async def yielding(
            requests: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for response in behavior(requests, context):
                    yield response
            except DecodeError as exc:
                await context.abort(CODE, message(exc))

        return handler._replace(**{attribute: yielding})

    async def returning(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(requests, context)
        except DecodeError as exc:
            await context.abort(CODE, message(exc))

    return handler._replace(**{attribute: returning})
