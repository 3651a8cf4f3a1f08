"""A client for infergate's admin RPC (infergate.admin.v1.ModelAdmin).

    with AdminClient("127.0.0.1:8001", token=os.environ["INFERGATE_ADMIN_TOKEN"]) as admin:
        admin.register("digits", {"model.onnx": Path("digits.onnx")})
        admin.update("digits", batching(max_queue_delay_us=2000))
        print(admin.describe("digits"))

Artifacts are streamed in 1 MiB chunks after a header that carries their sizes and
SHA-256, so a model of any size goes through without one huge message. Errors come
back as AdminError with the gRPC status code.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from infergate.clients.client import InferenceError, rpc_error
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import admin_pb2_grpc as apb_grpc
from infergate.protocol import model_config_pb2 as mc

CHUNK_BYTES = 1024 * 1024
# Headroom over the chunk size for the message around it.
_CHANNEL_OPTIONS = (("grpc.max_send_message_length", 2 * CHUNK_BYTES + 4096),)

# progress(filename, bytes sent so far, its size): called as chunks go out.
Progress = Callable[[str, int, int], None]


class AdminError(InferenceError):
    """An admin call the gateway refused or failed; `code` is its gRPC status."""


@dataclass(frozen=True)
class Artifact:
    """A local file to upload under `filename` (its name in the version folder)."""

    filename: str
    path: Path
    size: int
    sha256: str

    @classmethod
    def from_path(cls, filename: str, path: Path) -> Artifact:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
        return cls(filename, path, path.stat().st_size, digest.hexdigest())


@dataclass(frozen=True)
class ConfigUpdate:
    """New values for the ModelConfig fields that `paths` name (UpdateModelConfig)."""

    config: mc.ModelConfig
    paths: tuple[str, ...]


def registration_messages(
    name: str,
    artifacts: Sequence[Artifact],
    config: mc.ModelConfig | None = None,
    version: str = "",
    progress: Progress | None = None,
) -> Iterator[apb.RegisterModelRequest]:
    """The RegisterModel stream: the header, then each artifact's chunks in order."""
    header = apb.RegisterModelHeader(name=name, version=version)
    if config is not None:
        header.config.CopyFrom(config)
    for artifact in artifacts:
        header.artifacts.add(filename=artifact.filename, sha256=artifact.sha256, size=artifact.size)
    yield apb.RegisterModelRequest(header=header)
    for artifact in artifacts:
        sent = 0
        if progress is not None:
            progress(artifact.filename, 0, artifact.size)
        with artifact.path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield apb.RegisterModelRequest(
                    chunk=apb.ArtifactChunk(filename=artifact.filename, data=chunk)
                )
                sent += len(chunk)
                if progress is not None:
                    progress(artifact.filename, sent, artifact.size)


def _artifacts(files: Mapping[str, Path] | Sequence[Artifact]) -> list[Artifact]:
    if isinstance(files, Mapping):
        return [Artifact.from_path(name, Path(path)) for name, path in files.items()]
    return list(files)


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def update_request(name: str, update: ConfigUpdate) -> apb.UpdateModelConfigRequest:
    request = apb.UpdateModelConfigRequest(name=name, config=update.config)
    request.update_mask.paths.extend(update.paths)
    return request


class AdminClient:
    """Blocking admin client. `credentials`: grpc.ssl_channel_credentials(...) for TLS."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float | None = 60.0,
    ) -> None:
        if credentials is None:
            self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)
        self._stub = apb_grpc.ModelAdminStub(self._channel)
        self._metadata = _metadata(token)
        self.timeout_s = timeout_s

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any, timeout_s: float | None) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise rpc_error(exc, AdminError) from None

    def register(
        self,
        name: str,
        files: Mapping[str, Path] | Sequence[Artifact],
        config: mc.ModelConfig | None = None,
        version: str = "",
        progress: Progress | None = None,
        timeout_s: float | None = None,
    ) -> apb.RegisterModelResponse:
        """Upload a version; `files` maps artifact names ("model.onnx") to local paths.

        No timeout by default: a large upload takes as long as the network needs.
        """
        messages = registration_messages(name, _artifacts(files), config, version, progress)
        return self._call("RegisterModel", messages, timeout_s)  # type: ignore[no-any-return]

    def update(self, name: str, update: ConfigUpdate) -> mc.ModelConfig:
        response = self._call("UpdateModelConfig", update_request(name, update), self.timeout_s)
        return response.config  # type: ignore[no-any-return]

    def unregister(self, name: str, keep_files: bool = False) -> apb.UnregisterModelResponse:
        request = apb.UnregisterModelRequest(name=name, keep_files=keep_files)
        return self._call("UnregisterModel", request, self.timeout_s)  # type: ignore[no-any-return]

    def list_models(self) -> list[apb.ModelSummary]:
        return list(self._call("ListModels", apb.ListModelsRequest(), self.timeout_s).models)

    def describe(self, name: str) -> apb.DescribeModelResponse:
        request = apb.DescribeModelRequest(name=name)
        return self._call("DescribeModel", request, self.timeout_s)  # type: ignore[no-any-return]


class AsyncAdminClient:
    """asyncio admin client over grpc.aio; use one per event loop."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float | None = 60.0,
    ) -> None:
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)
        self._stub = apb_grpc.ModelAdminStub(self._channel)
        self._metadata = _metadata(token)
        self.timeout_s = timeout_s

    async def __aenter__(self) -> AsyncAdminClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: str, request: Any, timeout_s: float | None) -> Any:
        try:
            return await getattr(self._stub, method)(
                request, timeout=timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise rpc_error(exc, AdminError) from None

    async def register(
        self,
        name: str,
        files: Mapping[str, Path] | Sequence[Artifact],
        config: mc.ModelConfig | None = None,
        version: str = "",
        progress: Progress | None = None,
        timeout_s: float | None = None,
    ) -> apb.RegisterModelResponse:
        messages = registration_messages(name, _artifacts(files), config, version, progress)
        return await self._call("RegisterModel", _aiter(messages), timeout_s)  # type: ignore[no-any-return]

    async def update(self, name: str, update: ConfigUpdate) -> mc.ModelConfig:
        request = update_request(name, update)
        return (await self._call("UpdateModelConfig", request, self.timeout_s)).config  # type: ignore[no-any-return]

    async def unregister(self, name: str, keep_files: bool = False) -> apb.UnregisterModelResponse:
        request = apb.UnregisterModelRequest(name=name, keep_files=keep_files)
        return await self._call("UnregisterModel", request, self.timeout_s)  # type: ignore[no-any-return]

    async def list_models(self) -> list[apb.ModelSummary]:
        response = await self._call("ListModels", apb.ListModelsRequest(), self.timeout_s)
        return list(response.models)

    async def describe(self, name: str) -> apb.DescribeModelResponse:
        request = apb.DescribeModelRequest(name=name)
        return await self._call("DescribeModel", request, self.timeout_s)  # type: ignore[no-any-return]


async def _aiter(
    messages: Iterator[apb.RegisterModelRequest],
) -> AsyncIterator[apb.RegisterModelRequest]:
    for message in messages:
        yield message


# ---- building config updates --------------------------------------------------------


def batching(
    *,
    max_queue_delay_us: int | None = None,
    max_batch_size: int | None = None,
    preferred_batch_sizes: Sequence[int] | None = None,
    max_queue_size: int | None = None,
    enabled: bool | None = None,
    cache: bool | None = None,
    cache_ttl_ms: int | None = None,
    routing_policy: str | None = None,
    fixed_arm: str | None = None,
) -> ConfigUpdate:
    """A ConfigUpdate for the settings given; None leaves a setting as it is.

    enabled=False turns dynamic batching off (and wins over the other batching
    settings); any batching setting turns it on for a model that batches.
    """
    config = mc.ModelConfig()
    paths: list[str] = []
    if enabled is False:
        paths.append("dynamic_batching")
    else:
        batch = config.dynamic_batching
        if enabled:
            paths.append("dynamic_batching")
            batch.SetInParent()
        if max_queue_delay_us is not None:
            batch.max_queue_delay_microseconds = max_queue_delay_us
            paths.append("dynamic_batching.max_queue_delay_microseconds")
        if preferred_batch_sizes is not None:
            batch.preferred_batch_size.extend(preferred_batch_sizes)
            paths.append("dynamic_batching.preferred_batch_size")
        if max_queue_size is not None:
            batch.default_queue_policy.max_queue_size = max_queue_size
            paths.append("dynamic_batching.default_queue_policy.max_queue_size")
    if max_batch_size is not None:
        config.max_batch_size = max_batch_size
        paths.append("max_batch_size")
    if cache is not None:
        config.response_cache.enable = cache
        paths.append("response_cache.enable")
    if cache_ttl_ms is not None:
        config.response_cache_ttl_ms = cache_ttl_ms
        paths.append("response_cache_ttl_ms")
    if routing_policy is not None:
        config.routing.policy = routing_policy
        paths.append("routing.policy")
    if fixed_arm is not None:
        config.routing.fixed_arm = fixed_arm
        paths.append("routing.fixed_arm")
    return ConfigUpdate(config, tuple(paths))
