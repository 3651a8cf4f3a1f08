"""Streaming inference: requests out, answers back in the order they finish, matched by id.

The gateway runs the requests of one ModelStreamInfer stream concurrently and answers
each as soon as it is done, so answers come back out of order; each carries its
request's id. The correlator gives every request an id (its own, or a fresh one),
remembers it, and hands each answer back with the request it answers.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from infergate.clients.exceptions import ClientError, StreamError
from infergate.clients.infer_messages import InputValue, Parameter, build_request, parse_response
from infergate.protocol import inference_pb2 as pb

STREAM_METHOD = "ModelStreamInfer"


@dataclass(frozen=True)
class InferRequest:
    """One request on a stream; `id` "" gets one made up (see StreamResult.id)."""

    model: str
    inputs: Mapping[str, InputValue]
    outputs: Sequence[str] | None = None
    version: str = ""
    id: str = ""
    parameters: Mapping[str, Parameter] | None = None


@dataclass(frozen=True)
class StreamResult:
    """The answer to one request of a stream: its outputs, or why it failed."""

    id: str  # the request's id, or the one made up for it
    request: InferRequest
    outputs: dict[str, np.ndarray]  # empty when it failed
    error: StreamError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def result(self) -> dict[str, np.ndarray]:
        """The outputs; raises the StreamError if this request failed."""
        if self.error is not None:
            raise self.error
        return self.outputs


class StreamCorrelator:
    """Ids out, answers matched back. Thread-safe: the blocking client's requests are
    read on gRPC's thread while answers arrive on the caller's.

    A request that cannot be built (a bad input, a repeated id) ends the sending: the
    requests before it are still answered, and then `raise_failure` raises its error
    where the caller reads the answers, instead of gRPC's thread swallowing it.
    """

    def __init__(self, bf16_as_float32: bool = False) -> None:
        self._bf16_as_float32 = bf16_as_float32
        self._pending: dict[str, InferRequest] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._failure: Exception | None = None

    def messages(self, requests: Iterable[InferRequest]) -> Iterator[pb.ModelInferRequest]:
        try:
            for request in requests:
                yield self.outgoing(request)
        except Exception as exc:
            self._failure = exc

    async def async_messages(
        self, requests: Iterable[InferRequest] | AsyncIterable[InferRequest]
    ) -> AsyncIterator[pb.ModelInferRequest]:
        try:
            if isinstance(requests, AsyncIterable):
                async for request in requests:
                    yield self.outgoing(request)
            else:
                for request in requests:
                    yield self.outgoing(request)
        except Exception as exc:
            self._failure = exc

    def raise_failure(self) -> None:
        """Raise what stopped the sending, if anything did (once every answer is in)."""
        if self._failure is not None:
            raise self._failure

    def outgoing(self, request: InferRequest) -> pb.ModelInferRequest:
        with self._lock:
            request_id = request.id or self._fresh_id()
            if request_id in self._pending:
                raise ValueError(f"request id {request_id!r} is already waiting for its answer")
            self._pending[request_id] = request
        return build_request(
            request.model,
            request.inputs,
            request.outputs,
            request.version,
            request_id,
            request.parameters,
        )

    def _fresh_id(self) -> str:
        # A made-up id never takes one a caller chose for a request still waiting.
        while (candidate := f"stream-{next(self._numbers)}") in self._pending:
            pass
        return candidate

    def incoming(self, message: pb.ModelStreamInferResponse) -> StreamResult:
        response = message.infer_response
        with self._lock:
            request = self._pending.pop(response.id, None)
        if request is None:
            unknown = f"the stream answered a request id never sent: {response.id!r}"
            raise ClientError(grpc.StatusCode.UNKNOWN, unknown)
        if message.error_message:
            return StreamResult(response.id, request, {}, StreamError(message.error_message))
        outputs = parse_response(response, self._bf16_as_float32)
        return StreamResult(response.id, request, outputs)

    @property
    def waiting(self) -> int:
        """Requests sent and not answered yet."""
        with self._lock:
            return len(self._pending)
