"""A Python client for any Open Inference Protocol v2 gRPC server (infergate, Triton).

numpy in, numpy out:

    with Client("127.0.0.1:8001") as client:
        outputs = client.infer("digits", {"x": np.zeros((1, 64), np.float32)})

    async with AsyncClient("127.0.0.1:8001") as client:
        outputs = await client.infer("digits", {"x": batch})
        async for answer in client.stream_infer(InferRequest("digits", {"x": row}) for row in rows):
            print(answer.id, answer.result()["y"])

A failed call raises a ClientError subclass named for its status (ModelNotFound,
InvalidInput, Overloaded, DeadlineExceeded, ...; infergate.clients.exceptions).
Every call is written once (inference_calls); the two classes differ only in how they
wait for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

from infergate.clients import inference_calls as calls
from infergate.clients.endpoint import AsyncEndpoint, SyncEndpoint, async_rpc, sync_rpc
from infergate.clients.streaming import STREAM_METHOD, InferRequest, StreamCorrelator, StreamResult
from infergate.protocol import inference_pb2_grpc as pb_grpc


class Client(SyncEndpoint):
    """Blocking inference client; thread-safe. Parameters: see Endpoint."""

    _stub_type = pb_grpc.GRPCInferenceServiceStub

    is_server_live = sync_rpc(calls.is_server_live)
    is_server_ready = sync_rpc(calls.is_server_ready)
    is_model_ready = sync_rpc(calls.is_model_ready)
    server_metadata = sync_rpc(calls.server_metadata)
    model_metadata = sync_rpc(calls.model_metadata)
    model_config = sync_rpc(calls.model_config)
    model_statistics = sync_rpc(calls.model_statistics)
    repository_index = sync_rpc(calls.repository_index)
    infer = sync_rpc(calls.infer)

    def stream_infer(
        self,
        requests: Iterable[InferRequest],
        *,
        timeout_s: float | None = None,
        bf16_as_float32: bool = False,
    ) -> Iterator[StreamResult]:
        """Send `requests` on one stream; yield each answer as it comes (in the order the
        requests finish, not the order they were sent), matched to its request by id.

        A failed request is an answer with `error` set (its `result()` raises); the
        stream goes on. A failed stream raises. No deadline unless `timeout_s`.
        """
        correlator = StreamCorrelator(bf16_as_float32)
        messages = correlator.messages(requests)
        for message in self._transport.stream(STREAM_METHOD, messages, timeout_s):
            yield correlator.incoming(message)
        correlator.raise_failure()


class AsyncClient(AsyncEndpoint):
    """asyncio inference client over grpc.aio; make and use it in one event loop.
    Parameters: see Endpoint."""

    _stub_type = pb_grpc.GRPCInferenceServiceStub

    is_server_live = async_rpc(calls.is_server_live)
    is_server_ready = async_rpc(calls.is_server_ready)
    is_model_ready = async_rpc(calls.is_model_ready)
    server_metadata = async_rpc(calls.server_metadata)
    model_metadata = async_rpc(calls.model_metadata)
    model_config = async_rpc(calls.model_config)
    model_statistics = async_rpc(calls.model_statistics)
    repository_index = async_rpc(calls.repository_index)
    infer = async_rpc(calls.infer)

    async def stream_infer(
        self,
        requests: Iterable[InferRequest] | AsyncIterable[InferRequest],
        *,
        timeout_s: float | None = None,
        bf16_as_float32: bool = False,
    ) -> AsyncIterator[StreamResult]:
        """Send `requests` (an iterable, or an async iterable to keep feeding the stream)
        on one stream; yield each answer as it comes, matched to its request by id.

        A failed request is an answer with `error` set (its `result()` raises); the
        stream goes on. A failed stream raises. No deadline unless `timeout_s`.
        """
        correlator = StreamCorrelator(bf16_as_float32)
        messages = correlator.async_messages(requests)
        async for message in self._transport.stream(STREAM_METHOD, messages, timeout_s):
            yield correlator.incoming(message)
        correlator.raise_failure()
