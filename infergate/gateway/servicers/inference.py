"""inference.GRPCInferenceService: thin handlers over InferenceCore."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from infergate import __version__
from infergate.gateway import convert
from infergate.gateway.core.model_control import ModelControl
from infergate.gateway.core.pipeline import InferenceCore
from infergate.gateway.core.registry import ModelState
from infergate.gateway.core.request import InferResult
from infergate.gateway.servicers import admin_service
from infergate.gateway.servicers.errors import Context, grpc_errors
from infergate.gateway.servicers.observe import InferenceObserver
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.schema.errors import GatewayError, ModelNotFound, PreconditionFailed, shown

log = logging.getLogger(__name__)

SERVER_NAME = "infergate"
EXTENSIONS = ("model_configuration", "model_repository", "statistics")
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
    ) -> None:
        self._core = core
        self._is_ready = is_ready
        self._observer = observer
        self._admin = admin  # model control (Repository*); None: not offered

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
            result = await self._infer(request, context)
            return convert.encode_result(result)

    async def _infer(self, message: pb.ModelInferRequest, context: Context) -> InferResult:
        # Admission first: an unknown model or a full queue is refused before the
        # request's tensors are decoded, so refusing costs little under overload.
        model = self._core.admit(message.model_name, message.model_version)
        if convert.decodes_on_thread(message):
            request = await asyncio.to_thread(convert.decode_request, message, model.spec)
        else:
            request = convert.decode_request(message, model.spec)
        request.timeout_s = context.time_remaining()
        return await self._core.infer(request)

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
                    result = await self._infer(message, context)
                responses.put_nowait(
                    pb.ModelStreamInferResponse(infer_response=convert.encode_result(result))
                )
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
            await reader
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
        if request.name:
            entry = self._core.registry.entry(request.name)
            versions = list(entry.versions.values())
            if request.version:
                versions = [v for v in versions if v.version == request.version]
                if not versions:
                    raise ModelNotFound(
                        f"model {shown(request.name)} has no version {shown(request.version)}"
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
        await admin_service.repository_load(self._model_control(), request)
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


def _stream_error(message: pb.ModelInferRequest, error: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=error,
        infer_response=pb.ModelInferResponse(
            model_name=message.model_name, model_version=message.model_version, id=message.id
        ),
    )
