"""inference.GRPCInferenceService: thin handlers over InferenceCore.

Besides the v2 protocol, Triton's extensions its clients use: model configuration,
repository (model control), statistics, classification and sequences (in the
core), and system shared memory (the region registry, infergate.gateway.
shared_memory, which close() unmaps). CUDA shared memory answers, but registers
nothing: see CudaSharedMemoryRegister.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from google.protobuf.message import DecodeError

from infergate import __version__
from infergate.gateway import convert, request_decoding
from infergate.gateway.core.model_control import ModelControl
from infergate.gateway.core.pipeline import UNKNOWN_MODEL, InferenceCore, check_version_string
from infergate.gateway.core.registry import ModelState
from infergate.gateway.servicers import admin_service
from infergate.gateway.servicers.errors import Context, grpc_errors
from infergate.gateway.servicers.observe import InferenceObserver
from infergate.gateway.shared_memory import RegionNotFound, SharedMemoryRegistry
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.schema.errors import (
    GatewayError,
    ModelNotFound,
    PermissionDenied,
    PreconditionFailed,
    shown,
)

log = logging.getLogger(__name__)

SERVER_NAME = "infergate"
EXTENSIONS = (
    "classification",
    "sequence",
    "model_configuration",
    "model_repository",
    "system_shared_memory",
    "statistics",
)
# Peers that share this machine (and so its shared memory), as grpc names them.
LOCAL_PEERS = ("ipv4:127.", "ipv6:[::1]", "ipv6:[::ffff:127.", "unix:")
# Requests one stream may have in flight at once; beyond it the reader waits, which
# pushes back on the client through gRPC flow control.
STREAM_IN_FLIGHT = 256


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        core: InferenceCore,
        is_ready: Callable[[], bool],
        observer: InferenceObserver,
        admin: ModelControl | None = None,
        shared_memory: SharedMemoryRegistry | None = None,
        cuda_devices: Callable[[], int] | None = None,
    ) -> None:
        self._core = core
        self._is_ready = is_ready
        self._observer = observer
        self._admin = admin  # model control (Repository*); None: not offered
        self.shared_memory = shared_memory or SharedMemoryRegistry()
        self._cuda_devices = cuda_devices or _cuda_devices

    def close(self) -> None:
        """Unmap every shared-memory region (at shutdown, after the last call)."""
        self.shared_memory.close()

    # ---- health and metadata -------------------------------------------------

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._is_ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        try:
            self._core.model(request.name, request.version)
        except GatewayError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=list(EXTENSIONS)
        )

    @grpc_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        model = self._core.model(request.name, request.version)
        versions = list(self._core.registry.entry(request.name).versions)
        return convert.model_metadata(model, versions)

    @grpc_errors
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        model = self._core.model(request.name, request.version)
        return pb.ModelConfigResponse(config=model.config)

    # ---- inference --------------------------------------------------------------

    @grpc_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        with self._observer.request(request, context.invocation_metadata()):
            return await self._infer(request, context)

    async def _infer(
        self, message: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        # Admission first: an unknown model or a full queue is refused before the
        # request's tensors are decoded, so refusing costs little under overload.
        model = self._core.admit(message.model_name, message.model_version)
        regions = self.shared_memory
        placements = convert.output_placements(message, regions) if message.outputs else {}
        if convert.decodes_on_thread(message):
            request = await asyncio.to_thread(convert.decode_request, message, model.spec, regions)
        else:
            request = convert.decode_request(message, model.spec, regions)
        request.timeout_s = context.time_remaining()
        result = await self._core.infer(request, model)
        return convert.encode_result(result, placements)

    @request_decoding.handles_undecodable
    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: Context,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests on a stream run concurrently; responses go out as they finish.

        An error answers that request with error_message (and its id) and the stream
        goes on, as Triton's clients expect.
        """
        metadata = context.invocation_metadata()
        responses: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(message: pb.ModelInferRequest) -> None:
            try:
                with self._observer.request(message, metadata, "ModelStreamInfer"):
                    response = await self._infer(message, context)
                responses.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
            except GatewayError as exc:
                responses.put_nowait(_stream_error(message, str(exc)))
            except Exception as exc:
                log.exception("unexpected error on a stream")
                responses.put_nowait(_stream_error(message, f"internal error: {exc}"))
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for message in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(answer(message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                responses.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await responses.get()) is not None:
                yield response
            try:
                await reader
            except DecodeError as exc:  # a message's bytes did not parse: the stream ends
                await context.abort(request_decoding.CODE, request_decoding.message(exc))
        finally:
            pending = [reader, *tasks]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # ---- statistics and repository ------------------------------------------

    @grpc_errors
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        response = pb.ModelStatisticsResponse()
        check_version_string(request.version)
        if request.name:
            try:
                entry = self._core.registry.entry(request.name)
            except ModelNotFound as exc:
                raise ModelNotFound(f"{UNKNOWN_MODEL}: {exc}") from None
            versions = list(entry.versions.values())
            if request.version:
                versions = [v for v in versions if v.version == request.version]
                if not versions:
                    raise ModelNotFound(
                        f"{UNKNOWN_MODEL}: model {shown(request.name)} has no version "
                        f"{shown(request.version)}"
                    )
        else:
            versions = list(self._core.registry.ready_versions())
        for model in versions:
            response.model_stats.append(
                convert.model_statistics(model.name, model.version, model.stats)
            )
        return response

    @grpc_errors
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        rows = self._core.registry.index()
        if request.ready:
            rows = [r for r in rows if r.state == ModelState.READY.value]
        return convert.repository_index(rows)

    @grpc_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        try:
            await admin_service.repository_load(self._model_control(), request)
        except GatewayError as exc:
            # Triton's words lead (tools match on them); the status stays the error's.
            raise _reworded(exc, f"failed to load {shown(request.model_name)}") from None
        return pb.RepositoryModelLoadResponse()

    @grpc_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        await admin_service.repository_unload(self._model_control(), request)
        return pb.RepositoryModelUnloadResponse()

    def _model_control(self) -> ModelControl:
        if self._admin is None:
            raise PreconditionFailed("model control is not enabled on this gateway")
        return self._admin

    # ---- shared memory --------------------------------------------------------

    @grpc_errors
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Context
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self.shared_memory.status(request.name):
            response.regions[region.name].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=region.name,
                    key=region.key,
                    offset=region.offset,
                    byte_size=region.byte_size,
                )
            )
        return response

    @grpc_errors
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Context
    ) -> pb.SystemSharedMemoryRegisterResponse:
        require_local_peer(context.peer(), "system shared memory")
        # Opening and mapping a file: quick, but a syscall or three off the loop.
        await asyncio.to_thread(
            self.shared_memory.register,
            request.name,
            request.key,
            request.offset,
            request.byte_size,
        )
        return pb.SystemSharedMemoryRegisterResponse()

    @grpc_errors
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Context
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.shared_memory.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    @grpc_errors
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: Context
    ) -> pb.CudaSharedMemoryStatusResponse:
        """No CUDA region is ever registered: all of them is none, a named one unknown."""
        if request.name:
            raise RegionNotFound(f"Unable to find cuda shared memory region: {shown(request.name)}")
        return pb.CudaSharedMemoryStatusResponse()

    @grpc_errors
    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: Context
    ) -> pb.CudaSharedMemoryRegisterResponse:
        """Refused, saying why: with no GPU there is nothing to share; with one,
        infergate does not open CUDA IPC handles (it does not advertise
        cuda_shared_memory)."""
        devices = await asyncio.to_thread(self._cuda_devices)
        if devices == 0:
            raise PreconditionFailed(
                f"failed to register CUDA shared memory region {shown(request.name)}: this "
                "gateway has no GPU (no CUDA device found); send the tensor in the request "
                "or through system shared memory"
            )
        raise PreconditionFailed(
            f"failed to register CUDA shared memory region {shown(request.name)}: infergate "
            f"does not map CUDA IPC handles (this machine has {devices} CUDA devices, but "
            "cuda_shared_memory is not among its extensions); use system shared memory"
        )

    @grpc_errors
    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: Context
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        """Nothing to unregister; as in Triton, an unknown name is no error."""
        return pb.CudaSharedMemoryUnregisterResponse()


def _stream_error(message: pb.ModelInferRequest, error: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=error,
        infer_response=pb.ModelInferResponse(
            model_name=message.model_name, model_version=message.model_version, id=message.id
        ),
    )


E = TypeVar("E", bound=GatewayError)


def _reworded(error: E, lead: str) -> E:
    """The same error (so the same status), its message led by `lead`."""
    message = str(error)
    if message.startswith(lead):
        return error
    return type(error)(f"{lead}: {message}")


def require_local_peer(peer: str, what: str) -> None:
    """PermissionDenied unless the caller is on this machine: a region's bytes can come
    back in outputs, so a remote caller could read any object the gateway may open."""
    if not peer.startswith(LOCAL_PEERS):
        raise PermissionDenied(
            f"{what} can only be registered by a client on the gateway's machine "
            f"(loopback or a unix socket); this call came from {shown(peer)}"
        )


def _cuda_devices() -> int:
    """CUDA devices on this machine, as the onnxruntime backend's probe sees them."""
    try:
        from infergate.backends.providers import probe_providers

        return probe_providers().cuda_devices
    except Exception:  # no onnxruntime, no driver: no device infergate could use
        return 0
