"""infergate.admin.v1.ModelAdmin, and Triton's RepositoryModelLoad/Unload: thin handlers
over the core's ModelControl. Authentication happens before these run (gateway/auth.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from infergate.gateway import convert_model_control
from infergate.gateway.core.model_control import ModelControl
from infergate.gateway.core.optimization import ModelOptimizer
from infergate.gateway.core.replica_registry import ReplicaRegistry
from infergate.gateway.core.replica_state import ReplicaModel
from infergate.gateway.servicers.errors import Context, grpc_errors
from infergate.gateway.status import status_code
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import admin_pb2_grpc as apb_grpc
from infergate.protocol import inference_pb2 as pb
from infergate.schema.errors import GatewayError, InvalidInput, PreconditionFailed


class AdminServicer(apb_grpc.ModelAdminServicer):
    def __init__(
        self,
        admin: ModelControl,
        optimizer: ModelOptimizer,
        registry: ReplicaRegistry | None = None,
    ) -> None:
        self._admin = admin
        self._optimizer = optimizer
        # The shared registry, when replicas follow one (--registry-redis-url).
        self._registry = registry

    @grpc_errors
    async def RegisterModel(
        self, request_iterator: AsyncIterator[apb.RegisterModelRequest], context: Context
    ) -> apb.RegisterModelResponse:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidInput(
                "RegisterModel: the first message must be the header (name, config, "
                "artifacts), then the artifacts' chunks"
            )
        registration = convert_model_control.registration(first.header)
        wait_s = self._wait_s(first.header.wait_replicas_s)
        result = await self._admin.register(registration, _chunks(request_iterator))
        response = convert_model_control.registered(result)
        response.replicas.extend(await self._wait(registration.name, wait_s))
        return response

    @grpc_errors
    async def UpdateModelConfig(
        self, request: apb.UpdateModelConfigRequest, context: Context
    ) -> apb.UpdateModelConfigResponse:
        wait_s = self._wait_s(request.wait_replicas_s)
        config = await self._admin.update_config(
            request.name, request.config, list(request.update_mask.paths)
        )
        return apb.UpdateModelConfigResponse(
            config=config, replicas=await self._wait(request.name, wait_s)
        )

    @grpc_errors
    async def UnregisterModel(
        self, request: apb.UnregisterModelRequest, context: Context
    ) -> apb.UnregisterModelResponse:
        wait_s = self._wait_s(request.wait_replicas_s)
        result = await self._admin.unregister(request.name, keep_files=request.keep_files)
        return apb.UnregisterModelResponse(
            versions=list(result.versions),
            files_removed=result.files_removed,
            replicas=await self._wait(request.name, wait_s),
        )

    @grpc_errors
    async def ListModels(
        self, request: apb.ListModelsRequest, context: Context
    ) -> apb.ListModelsResponse:
        views = await self._admin.models()
        response = apb.ListModelsResponse(models=[convert_model_control.summary(v) for v in views])
        if self._registry is not None:
            across = await self._registry.replicas_of(v.name for v in views)
            for message in response.models:
                message.replicas.extend(
                    convert_model_control.replica_models(across.get(message.name, ()))
                )
        return response

    @grpc_errors
    async def DescribeModel(
        self, request: apb.DescribeModelRequest, context: Context
    ) -> apb.DescribeModelResponse:
        view, artifacts = await self._admin.describe(request.name)
        variants = await asyncio.to_thread(self._optimizer.stored_by_version, view)
        response = convert_model_control.description(
            view, artifacts, self._admin.lifecycle.cache.stats(), variants
        )
        if self._registry is not None:
            across = await self._registry.replicas_of([view.name])
            response.replicas.extend(convert_model_control.replica_models(across[view.name]))
        return response

    # ---- waiting for the other replicas ---------------------------------------------------

    def _wait_s(self, requested: float) -> float:
        """The wait a change asks for, refused before anything changes if it cannot be."""
        wait_s = convert_model_control.wait_replicas_s(requested)
        if wait_s > 0 and self._registry is None:
            raise PreconditionFailed(
                "wait_replicas_s: this gateway follows no shared registry "
                "(--registry-redis-url is unset), so there are no replicas to wait for"
            )
        return wait_s

    async def _wait(self, name: str, wait_s: float) -> list[apb.ReplicaModel]:
        if wait_s <= 0 or self._registry is None:
            return []
        rows: list[ReplicaModel] = await self._registry.wait_replicas(name, wait_s)
        return convert_model_control.replica_models(rows)

    async def OptimizeModel(
        self, request: apb.OptimizeModelRequest, context: Context
    ) -> AsyncIterator[apb.OptimizeModelProgress]:
        """Progress as the work goes; the last message has the verdicts. The work runs
        to its end even if the caller goes away (its stored variants must match what
        serves)."""
        updates: asyncio.Queue[apb.OptimizeModelProgress] = asyncio.Queue()

        def progress(stage: str, fraction: float, message: str) -> None:
            updates.put_nowait(
                apb.OptimizeModelProgress(stage=stage, fraction=fraction, message=message)
            )

        try:
            task = self._optimizer.start(convert_model_control.optimize_request(request), progress)
            while not task.done() or not updates.empty():
                waiter = asyncio.ensure_future(updates.get())
                await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
                if waiter.done():
                    yield waiter.result()
                else:
                    waiter.cancel()
            yield convert_model_control.optimized(task.result())
        except GatewayError as exc:
            await context.abort(status_code(exc), str(exc))

    @grpc_errors
    async def ProfileModel(
        self, request: apb.ProfileModelRequest, context: Context
    ) -> apb.ProfileModelResponse:
        files = await self._optimizer.profile_files(convert_model_control.profile_request(request))
        return convert_model_control.profile_report(files)


async def _chunks(
    messages: AsyncIterator[apb.RegisterModelRequest],
) -> AsyncIterator[tuple[str, bytes]]:
    async for message in messages:
        if message.WhichOneof("part") != "chunk":
            raise InvalidInput("RegisterModel: only the first message may be a header")
        yield message.chunk.filename, message.chunk.data


# ---- Triton's model control (called from InferenceServicer) ----------------------------


async def repository_load(admin: ModelControl, request: pb.RepositoryModelLoadRequest) -> None:
    """Files: register them as a new version. No files: reload from the repository."""
    load = convert_model_control.triton_load(request.parameters)
    if load.files:
        registration = load.registration(request.model_name)

        async def chunks() -> AsyncIterator[tuple[str, bytes]]:
            for filename, data in load.files.items():
                yield filename, data

        await admin.register(registration, chunks())
    else:
        await admin.reload(request.model_name, load.config)


async def repository_unload(admin: ModelControl, request: pb.RepositoryModelUnloadRequest) -> None:
    """Triton's unload stops serving and keeps the files (a later load brings it back)."""
    await admin.unregister(request.model_name, keep_files=True)
