"""A Python client for any Open Inference Protocol v2 gRPC server (infergate, Triton).

numpy in, numpy out:

    with Client("127.0.0.1:8001") as client:
        outputs = client.infer("digits", {"x": np.zeros((1, 64), np.float32)})

    async with AsyncClient("127.0.0.1:8001") as client:
        outputs = await client.infer("digits", {"x": batch})

Errors from the server come back as InferenceError with its gRPC status code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import numpy as np

from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.schema import codec, datatypes

# Match the server's default limit; tensors of hundreds of MB are legitimate.
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
)


class InferenceError(Exception):
    """A call the server refused or failed; `code` is its gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def build_request(
    model: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None = None,
    version: str = "",
    request_id: str = "",
    parameters: Mapping[str, bool | int | float | str] | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest with every input as raw bytes."""
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, value in inputs.items():
        array = np.asarray(value)
        datatype = datatypes.from_numpy(array.dtype).name
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(array.shape)
        request.raw_input_contents.append(codec.encode_raw(datatype, array))
    for name in outputs or ():
        request.outputs.add(name=name)
    for key, param in (parameters or {}).items():
        _set_parameter(request.parameters[key], param)
    return request


def _set_parameter(target: pb.InferParameter, value: bool | int | float | str) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = value


def parse_response(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Output arrays by name, from raw contents or typed contents."""
    outputs: dict[str, np.ndarray] = {}
    raw = response.raw_output_contents
    for index, tensor in enumerate(response.outputs):
        datatype = datatypes.from_name(tensor.datatype)
        shape = tuple(tensor.shape)
        if raw:
            outputs[tensor.name] = codec.decode_raw(tensor.name, datatype, shape, raw[index])
        else:
            field = datatype.contents_field or "fp32_contents"
            values = list(getattr(tensor.contents, field))
            outputs[tensor.name] = np.array(values, dtype=datatype.numpy).reshape(shape)
    return outputs


E = TypeVar("E", bound=InferenceError)


def rpc_error(exc: grpc.RpcError, kind: type[E]) -> E:
    """The client's exception for a failed call, with its gRPC status and details."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return kind(code, details or "")


class Client:
    """Blocking client; thread-safe (gRPC channels are)."""

    def __init__(self, address: str, timeout_s: float | None = 30.0) -> None:
        self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self.timeout_s = timeout_s

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise rpc_error(exc, InferenceError) from None

    def is_server_live(self) -> bool:
        return bool(self._call("ServerLive", pb.ServerLiveRequest()).live)

    def is_server_ready(self) -> bool:
        return bool(self._call("ServerReady", pb.ServerReadyRequest()).ready)

    def is_model_ready(self, model: str, version: str = "") -> bool:
        return bool(
            self._call("ModelReady", pb.ModelReadyRequest(name=model, version=version)).ready
        )

    def server_metadata(self) -> pb.ServerMetadataResponse:
        return self._call("ServerMetadata", pb.ServerMetadataRequest())  # type: ignore[no-any-return]

    def model_metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        request = pb.ModelMetadataRequest(name=model, version=version)
        return self._call("ModelMetadata", request)  # type: ignore[no-any-return]

    def model_config(self, model: str, version: str = "") -> pb.ModelConfigResponse:
        request = pb.ModelConfigRequest(name=model, version=version)
        return self._call("ModelConfig", request)  # type: ignore[no-any-return]

    def model_statistics(self, model: str = "", version: str = "") -> pb.ModelStatisticsResponse:
        request = pb.ModelStatisticsRequest(name=model, version=version)
        return self._call("ModelStatistics", request)  # type: ignore[no-any-return]

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        version: str = "",
        request_id: str = "",
        parameters: Mapping[str, bool | int | float | str] | None = None,
    ) -> dict[str, np.ndarray]:
        request = build_request(model, inputs, outputs, version, request_id, parameters)
        return parse_response(self._call("ModelInfer", request))


class AsyncClient:
    """asyncio client over grpc.aio; use one per event loop."""

    def __init__(self, address: str, timeout_s: float | None = 30.0) -> None:
        self._channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self.timeout_s = timeout_s

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise rpc_error(exc, InferenceError) from None

    async def is_server_ready(self) -> bool:
        return bool((await self._call("ServerReady", pb.ServerReadyRequest())).ready)

    async def is_model_ready(self, model: str, version: str = "") -> bool:
        request = pb.ModelReadyRequest(name=model, version=version)
        return bool((await self._call("ModelReady", request)).ready)

    async def model_metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        request = pb.ModelMetadataRequest(name=model, version=version)
        return await self._call("ModelMetadata", request)  # type: ignore[no-any-return]

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        version: str = "",
        request_id: str = "",
        parameters: Mapping[str, bool | int | float | str] | None = None,
    ) -> dict[str, np.ndarray]:
        request = build_request(model, inputs, outputs, version, request_id, parameters)
        return parse_response(await self._call("ModelInfer", request))
