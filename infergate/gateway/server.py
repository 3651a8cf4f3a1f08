"""The gRPC server's lifecycle: build, load the repository, serve, stop gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from infergate.backends.base import Backend, BackendOptions
from infergate.backends.discovery import discover
from infergate.gateway import generic_handlers, tls, tuning
from infergate.gateway.auth import ADMIN_SERVICE, AuthPolicy, Guarded, is_loopback
from infergate.gateway.core import store
from infergate.gateway.core.cache import ResponseCache
from infergate.gateway.core.lifecycle import ModelLifecycle
from infergate.gateway.core.model_control import ModelControl
from infergate.gateway.core.optimization import ModelOptimizer
from infergate.gateway.core.pipeline import InferenceCore
from infergate.gateway.core.redis_link import link_from_settings
from infergate.gateway.core.redis_store import cache_store
from infergate.gateway.core.replica_registry import registry_from_settings
from infergate.gateway.core.repository_state import recover_shared
from infergate.gateway.core.routing import RunOptions
from infergate.gateway.request_decoding import LenientDecoding
from infergate.gateway.servicers.admin_service import AdminServicer
from infergate.gateway.servicers.inference import InferenceServicer
from infergate.gateway.servicers.observe import InferenceObserver
from infergate.protocol import admin_pb2_grpc as apb_grpc
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.settings import Settings, SettingsError
from infergate.telemetry import Metrics, setup_tracing

log = logging.getLogger(__name__)

_MB = 1024 * 1024
# The health service reports the inference service under this name, and the server
# as a whole under "".
INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class GatewayServer:
    """One gateway: a gRPC server over an InferenceCore and a ModelLifecycle.

    Use `await start()` then `await wait()` (or `serve()` for both with signal
    handling), and always `await stop()`. `port` is the bound port, also when the
    settings asked for port 0.
    """

    def __init__(self, settings: Settings, backends: Mapping[str, Backend] | None = None) -> None:
        if settings.inline_below_us < 0:
            raise SettingsError(
                f"inline_below_us must be >= 0 (0: never inline), not {settings.inline_below_us}"
            )
        self.settings = settings
        if backends is None:
            discovered = discover(settings.backends)
            backends = discovered.backends
        if not backends:
            raise RuntimeError(
                "no inference backend is available; install onnxruntime-gpu or onnxruntime"
            )
        threads = tuning.intra_op_threads(settings)
        log.info(
            "runtime calls use %d intra-op thread(s), onnxruntime's %d (%s)",
            threads.intra_op_threads,
            threads.sleeping_intra_op_threads,
            threads.reason,
        )
        options = BackendOptions(
            intra_op_threads=threads.intra_op_threads,
            sleeping_intra_op_threads=threads.sleeping_intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            use_gpu=settings.use_gpu,
        )
        # With --cache-redis-url, the LRU is in front of a Redis every replica shares;
        # self.redis is the one link to it (docs/scale-out.md).
        self.redis = link_from_settings(settings)
        cache = ResponseCache(cache_store(settings, self.redis))
        self.lifecycle = ModelLifecycle(
            backends,
            options,
            cache,
            worker_threads=settings.worker_threads,
            max_inflight_batches=settings.max_inflight_batches,
            run_options=RunOptions(
                inline_below_s=settings.inline_below_us / 1e6,
                execution_timeout_s=settings.execution_timeout_s,
            ),
            default_max_batch_size=settings.default_max_batch_size,
            threads_reason=threads.reason,
            inflight_reason=tuning.inflight_reason(settings),
        )
        self.core = InferenceCore(self.lifecycle.registry, cache)
        self._ready = False
        self.tracing = setup_tracing(settings.tracing)
        self.metrics = Metrics()
        self.metrics.watch(self.lifecycle.snapshot)
        self.lifecycle.attach_telemetry(self.tracing, self.metrics)
        self.metrics_port = 0
        self.admin = ModelControl(
            self.lifecycle, settings.model_repository, settings.max_artifact_mb * _MB
        )
        # With --registry-redis-url, replicas sharing the repository follow each
        # other's model changes (docs/scale-out.md, "The registry"); its own link.
        self.registry = registry_from_settings(settings, self.admin)
        self.admin.coordinator = self.registry
        self.optimizer = ModelOptimizer(self.admin, self.lifecycle)
        auth = AuthPolicy.from_settings(settings)
        self._credentials = tls.server_credentials(settings)
        if auth.admin_tokens and self._credentials is None and not is_loopback(settings.host):
            log.warning("admin tokens travel in clear text: give the listener --tls-cert/--tls-key")
        self._health = health.aio.HealthServicer()
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_receive_message_mb * _MB),
                ("grpc.max_send_message_length", settings.max_send_message_mb * _MB),
                # Port 0 or a taken port must fail loudly, not share with another process.
                ("grpc.so_reuseport", 0),
                *_connection_age_options(settings),
            ],
        )
        self._inference = InferenceServicer(
            self.core,
            lambda: self._ready,
            InferenceObserver(self.tracing, self.metrics, self.core.registry.__contains__),
            admin=self.admin,
        )

        # Generic handlers only: registered methods cost every RPC Python work in
        # proportion to their number (infergate/gateway/generic_handlers.py). Each
        # call's authorization is checked in the handler lookup (auth.Guarded), and
        # request bytes that do not parse answer INVALID_ARGUMENT (request_decoding).
        def guarded(handler: grpc.GenericRpcHandler) -> grpc.GenericRpcHandler:
            return Guarded(LenientDecoding(handler), auth)

        generic_handlers.add_services(
            self._server,
            [
                (pb_grpc.add_GRPCInferenceServiceServicer_to_server, self._inference),
                (
                    apb_grpc.add_ModelAdminServicer_to_server,
                    AdminServicer(self.admin, self.optimizer, self.registry),
                ),
                (health_pb2_grpc.add_HealthServicer_to_server, self._health),
            ],
            guarded,
        )
        generic_handlers.add_reflection(
            self._server, (INFERENCE_SERVICE, ADMIN_SERVICE, health.SERVICE_NAME), guarded
        )
        self.port = 0
        self._stopped = asyncio.Event()

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        """Bind, start answering (not ready yet), load the repository, then be ready."""
        try:
            if self._credentials is None:
                self.port = self._server.add_insecure_port(self.settings.address)
            else:
                self.port = self._server.add_secure_port(self.settings.address, self._credentials)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot listen on {self.settings.address}: {exc}") from exc
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.settings.metrics_port:
            try:
                self.metrics_port = self.metrics.serve(
                    self.settings.metrics_host, self.settings.metrics_port
                )
            except OSError as exc:
                raise RuntimeError(
                    f"cannot serve metrics on {self.settings.metrics_host}:"
                    f"{self.settings.metrics_port}: {exc} (--metrics-port 0 turns them off)"
                ) from exc
        await self._server.start()
        log.info("infergate listening on %s", self.address)
        if self.settings.model_repository is not None:
            # Before loading: a registration a crash cut short must not be seen. A
            # repository other replicas write to keeps what they may be writing now.
            recover = store.recover if self.registry is None else recover_shared
            for done in await asyncio.to_thread(recover, self.settings.model_repository):
                log.warning("repository recovery: %s", done)
            if self.registry is not None:
                await self.registry.prepare()
            await self.lifecycle.load_repository(self.settings.model_repository)
        if self.registry is not None:
            self.registry.start()
        self._ready = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        for row in self.core.registry.index():
            log.info(
                "model %s version %s: %s %s", row.name, row.version or "-", row.state, row.reason
            )
        log.info("infergate ready on %s", self.address)

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self, grace_s: float | None = None, drain_s: float = 0.0) -> None:
        """Stop in three steps: drain (health says NOT_SERVING while calls are still
        served, `drain_s`), refuse new calls, give in-flight ones `grace_s` to finish;
        then free the models."""
        if self._stopped.is_set():
            return
        self._ready = False
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if drain_s > 0:
            log.info("draining for %.1fs: health says NOT_SERVING, calls still served", drain_s)
            await asyncio.sleep(drain_s)
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        await self._server.stop(grace)
        self._inference.close()  # shared-memory regions: no call reads them any more
        if self.registry is not None:
            await self.registry.stop()  # no more following; changes in progress finish
        await self.optimizer.aclose()
        await self.admin.aclose()
        if self.registry is not None:
            await self.registry.aclose()
        await self.lifecycle.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        self.metrics.close()
        # Flushing the exporter may wait on the network: keep it off the event loop.
        await asyncio.to_thread(self.tracing.shutdown)
        self._stopped.set()
        log.info("infergate stopped")

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for service in ("", INFERENCE_SERVICE):
            await self._health.set(service, status)

    async def serve(self) -> None:
        """Start, then run until SIGTERM or SIGINT, then stop gracefully.

        SIGTERM (what an orchestrator sends) drains first; SIGINT (Ctrl-C at a
        terminal, where nobody balances load) stops at once, with the same grace.
        """
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        received: list[signal.Signals] = []

        def request_stop(sig: signal.Signals) -> None:
            received.append(sig)
            stop_requested.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, request_stop, sig)
        drain_s = 0.0
        try:
            await self.start()
            await stop_requested.wait()
            drain_s = self.settings.drain_s if received[0] is signal.SIGTERM else 0.0
            log.info(
                "%s received: stopping (drain %.1fs, grace %.1fs)",
                received[0].name,
                drain_s,
                self.settings.shutdown_grace_s,
            )
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop(drain_s=drain_s)


def _connection_age_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC's connection age limit (GOAWAY, then the client reconnects), when set."""
    if settings.max_connection_age_s < 0 or settings.max_connection_age_grace_s < 0:
        raise SettingsError("max_connection_age_s and max_connection_age_grace_s must be >= 0")
    if settings.max_connection_age_s == 0:
        return []
    options = [("grpc.max_connection_age_ms", max(1, round(settings.max_connection_age_s * 1000)))]
    if settings.max_connection_age_grace_s > 0:
        grace_ms = max(1, round(settings.max_connection_age_grace_s * 1000))
        options.append(("grpc.max_connection_age_grace_ms", grace_ms))
    return options
