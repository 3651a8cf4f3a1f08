"""A client for infergate's admin RPC (infergate.admin.v1.ModelAdmin).

    with AdminClient("127.0.0.1:8001", token=os.environ["INFERGATE_ADMIN_TOKEN"]) as admin:
        admin.register("digits", {"model.onnx": Path("digits.onnx")}, progress=True)
        admin.update("digits", batching(max_queue_delay_us=2000))
        print(admin.describe("digits"))

Every admin call needs the admin token. Registering, updating and unregistering are
never retried (they change state); listing and describing are. Every call is written
once (admin_calls); the two classes differ only in how they wait for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from infergate.clients import admin_calls as calls
from infergate.clients.admin_calls import (
    CHUNK_BYTES,
    Artifact,
    ConfigUpdate,
    batching,
    registration_messages,
)
from infergate.clients.endpoint import AsyncEndpoint, SyncEndpoint, async_rpc, sync_rpc
from infergate.clients.exceptions import AdminError
from infergate.clients.upload_progress import Progress, ProgressBar
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import admin_pb2_grpc as apb_grpc

__all__ = [
    "CHUNK_BYTES",
    "AdminClient",
    "AdminError",
    "Artifact",
    "AsyncAdminClient",
    "ConfigUpdate",
    "Progress",
    "ProgressBar",
    "batching",
    "registration_messages",
]


class AdminClient(SyncEndpoint):
    """Blocking admin client; thread-safe. Parameters: see Endpoint (`token`: the
    gateway's admin token)."""

    _stub_type = apb_grpc.ModelAdminStub

    register = sync_rpc(calls.register)
    update = sync_rpc(calls.update)
    unregister = sync_rpc(calls.unregister)
    list_models = sync_rpc(calls.list_models)
    describe = sync_rpc(calls.describe)
    profile = sync_rpc(calls.profile)

    def optimize(
        self,
        name: str,
        calibration: calls.Samples | None,
        validation: calls.Samples | None = None,
        *,
        variants: Sequence[str] = (),
        backends: Sequence[str] = (),
        thresholds: Mapping[str, float] | None = None,
        version: str = "",
        progress: calls.StageProgress | bool | None = None,
        timeout_s: float | None = None,
    ) -> apb.OptimizeModelProgress:
        """Build, gate and serve variants of a model (see calls.optimize_request:
        calibration None uses the live requests the model keeps); the last message:
        every variant's verdict and figures, and the arms now serving.
        progress: True prints stages on stderr; a callable gets (stage, fraction, message)."""
        request = calls.optimize_request(
            name, calibration, validation, variants, backends, thresholds, version
        )
        report = calls.stage_printer() if progress is True else progress or None
        last = apb.OptimizeModelProgress()
        for last in self._transport.stream("OptimizeModel", request, timeout_s):
            if report is not None and not last.done:
                report(last.stage, last.fraction, last.message)
        return last


class AsyncAdminClient(AsyncEndpoint):
    """asyncio admin client over grpc.aio; make and use it in one event loop.
    Parameters: see Endpoint (`token`: the gateway's admin token)."""

    _stub_type = apb_grpc.ModelAdminStub

    # Registering hashes the artifacts first: on a thread, not on the event loop.
    register = async_rpc(calls.register, build_in_thread=True)
    update = async_rpc(calls.update)
    unregister = async_rpc(calls.unregister)
    list_models = async_rpc(calls.list_models)
    describe = async_rpc(calls.describe)
    profile = async_rpc(calls.profile)

    async def optimize(
        self,
        name: str,
        calibration: calls.Samples | None,
        validation: calls.Samples | None = None,
        *,
        variants: Sequence[str] = (),
        backends: Sequence[str] = (),
        thresholds: Mapping[str, float] | None = None,
        version: str = "",
        progress: calls.StageProgress | bool | None = None,
        timeout_s: float | None = None,
    ) -> apb.OptimizeModelProgress:
        """AdminClient.optimize, awaited."""
        request = await asyncio.to_thread(
            calls.optimize_request,
            name, calibration, validation, variants, backends, thresholds, version,
        )  # fmt: skip
        report = calls.stage_printer() if progress is True else progress or None
        last = apb.OptimizeModelProgress()
        async for last in self._transport.stream("OptimizeModel", request, timeout_s):
            if report is not None and not last.done:
                report(last.stage, last.fraction, last.message)
        return last
