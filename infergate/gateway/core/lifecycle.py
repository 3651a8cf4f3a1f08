"""The life of served models: load, serve, retire, reconfigure, unload; and their figures.

ModelLifecycle owns the registry (which versions serve), what loading needs
(backends, their options, the worker threads that run batches), and the versions
that a newer one replaced while they drain. The request path
(infergate.gateway.core.pipeline) only reads the registry; what changes it at run
time is decided in infergate.gateway.core.model_control.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from infergate.backends.base import Backend, BackendOptions
from infergate.gateway.core.batch_telemetry import BatchTelemetry
from infergate.gateway.core.batching import policy_from_config
from infergate.gateway.core.cache import ResponseCache
from infergate.gateway.core.loader import load_model
from infergate.gateway.core.model import ExecutionChoice, ModelVersion
from infergate.gateway.core.registry import ModelRegistry
from infergate.gateway.core.repository import ModelSource, list_models, read_versions
from infergate.gateway.core.routing import DEFAULT_RUN_OPTIONS, RunOptions, make_policy
from infergate.gateway.core.version_policy import served_versions
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import GatewayError, ModelLoadError
from infergate.telemetry.metrics import Metrics, ModelSnapshot, Snapshot
from infergate.telemetry.tracing import Tracing

log = logging.getLogger(__name__)

T = TypeVar("T")


class ModelLifecycle:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        options: BackendOptions,
        cache: ResponseCache,
        *,
        worker_threads: int = 2,
        max_inflight_batches: int = 1,
        run_options: RunOptions = DEFAULT_RUN_OPTIONS,
        default_max_batch_size: int = 32,
        threads_reason: str = "",
        inflight_reason: str = "",
    ) -> None:
        self.backends = dict(backends)
        self.options = options
        # Why options.intra_op_threads and max_inflight_batches are what they are
        # (infergate.gateway.tuning, the settings), for each model's description.
        self.threads_reason = threads_reason or "the gateway's setting"
        self.inflight_reason = inflight_reason or "the gateway's setting"
        # Held here so that a model's answers can be forgotten with the model.
        self.cache = cache
        self.default_max_batch_size = default_max_batch_size
        self.max_inflight_batches = max_inflight_batches
        self.run_options = run_options
        self.registry = ModelRegistry()
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, worker_threads), thread_name_prefix="infergate-worker"
        )
        self._retiring: set[asyncio.Task[None]] = set()
        # Versions that failed while others of the same model loaded: the model's
        # reason once those serve.
        self._partly_failed: dict[str, str] = {}
        self._closed = False
        self._tracing: Tracing | None = None
        self._metrics: Metrics | None = None

    def attach_telemetry(self, tracing: Tracing, metrics: Metrics) -> None:
        """Report spans and metrics from here on (the server calls this before loading)."""
        self._tracing = tracing if tracing.enabled else None
        self._metrics = metrics

    # ---- loading -----------------------------------------------------------------

    async def load(self, source: ModelSource, *, record_failure: bool = False) -> ModelVersion:
        """Load and warm up a version without serving it; ModelLoadError on any failure.

        A failure becomes the model's reason in the registry when the registry knows
        the model (its serving version goes on serving) or `record_failure` asks.
        """
        return await self._load(source.name, lambda: self._load_source(source), record_failure)

    async def load_from_repository(
        self, repository: Path, name: str, config: mc.ModelConfig | None = None
    ) -> list[ModelVersion]:
        """Read a model from the repository (with `config` over its own, if given) and
        load the versions its version_policy serves, oldest first, as load() does.

        A version that fails is logged, and becomes the model's reason once the others
        serve; only when none loads does this fail (recording it)."""

        def read() -> list[ModelSource]:
            def policy(disk_config: mc.ModelConfig | None, on_disk: list[str]) -> list[str]:
                return served_versions(config or disk_config, on_disk)

            sources = read_versions(repository, name, select=policy)
            return [replace(s, config=config) for s in sources] if config else sources

        sources = await self._load(name, read, record_failure=True)
        loaded: list[ModelVersion] = []
        failures: list[GatewayError] = []
        for source in sources:
            try:
                loaded.append(await self.load(source, record_failure=False))
            except GatewayError as exc:
                failures.append(exc)
        if not loaded:
            self._record_failure(name, failures[0], always=True)
            raise failures[0]
        self._partly_failed[name] = "; ".join(str(f) for f in failures)
        return loaded

    async def load_repository(self, repository: Path) -> None:
        """Load and serve every model in the repository; a model that fails is recorded
        in the registry (load_from_repository does that) and the others go on."""
        for name in list_models(repository):
            self.registry.set_loading(name)
            try:
                versions = await self.load_from_repository(repository, name)
            except GatewayError:
                continue
            for model in versions:
                self.serve(model)

    def _load_source(self, source: ModelSource) -> ModelVersion:
        return load_model(source, self.backends, self.options, self.default_max_batch_size)

    async def _load(self, name: str, load: Callable[[], T], record_failure: bool) -> T:
        # The one place a load fails: every caller sees a GatewayError, logged once.
        try:
            return await asyncio.to_thread(load)
        except GatewayError as exc:
            log.error("model %s failed to load: %s", name, exc)
            self._record_failure(name, exc, record_failure)
            raise
        except Exception as exc:  # a runtime bug fails this load, not the server
            log.exception("model %s failed to load", name)
            error = ModelLoadError(f"model '{name}' failed to load: {type(exc).__name__}: {exc}")
            self._record_failure(name, error, record_failure)
            raise error from exc

    def _record_failure(self, name: str, error: GatewayError, always: bool) -> None:
        # A model the registry knows keeps serving, with the failure as its reason.
        if always or name in self.registry:
            self.registry.set_failed(name, str(error))

    # ---- serving -----------------------------------------------------------------

    def _intra_op_threads(self, model: ModelVersion) -> int:
        """The most threads any of the model's arms' calls may use."""
        counts = [
            backend.intra_op_threads(self.options)
            if (backend := self.backends.get(arm.backend)) is not None
            else self.options.intra_op_threads
            for arm in model.arms
        ]
        return max(counts, default=self.options.intra_op_threads)

    def serve(self, model: ModelVersion) -> None:
        """Make a loaded model take traffic; versions it replaces drain in the background."""
        telemetry = BatchTelemetry(model.name, self._tracing, self._metrics)
        inflight = model.instances or self.max_inflight_batches
        model.execution = ExecutionChoice(
            intra_op_threads=self._intra_op_threads(model),
            intra_op_threads_reason=self.threads_reason,
            max_inflight_batches=inflight,
            max_inflight_batches_reason=(
                "the config's instance_group count" if model.instances else self.inflight_reason
            ),
        )
        model.start(self._executor, inflight, telemetry, self.run_options)

        def policy(serving: list[str]) -> list[str]:
            return served_versions(model.config, serving)

        for old in self.registry.set_ready(model, keep=policy):
            self._retire(old)
        if failed := self._partly_failed.pop(model.name, ""):  # its sibling versions
            self.registry.set_failed(model.name, failed)

    def _retire(self, model: ModelVersion) -> None:
        task = asyncio.get_running_loop().create_task(model.aclose(drain=True))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def reconfigure(self, model: ModelVersion, config: mc.ModelConfig) -> None:
        """Give a serving version new batching, cache and routing settings, live.

        Only what is read per batch or per request may differ from the old config
        (infergate.gateway.core.live_config checks that).
        """
        # Everything that can refuse the config first, so a refusal changes nothing.
        batching = policy_from_config(config, model.queue.policy.max_inflight)
        routing = None
        if config.routing != model.config.routing:
            routing = make_policy(config.routing, model.arms)
        # In place: whoever holds the version sees one config, never a mix.
        model.config.CopyFrom(config)
        if model.spec.max_batch_size != config.max_batch_size:
            model.spec = replace(model.spec, max_batch_size=config.max_batch_size)
        model.queue.update_policy(batching)
        if routing is not None:
            model.router.policy = routing

    async def unload(self, name: str, drain: bool = True) -> list[ModelVersion]:
        """Stop routing requests to a model, finish (or fail) its queue, free it."""
        versions = self.registry.remove(name)
        await asyncio.gather(*(model.aclose(drain=drain) for model in versions))
        return versions

    async def forget_answers(self, name: str, version: str | None = None) -> None:
        """Drop a model's cached responses (one version's, or all): its name and
        version may now mean other bytes. Other models' answers stay."""
        dropped = await self.cache.invalidate(name, version)
        if dropped:
            log.info("model %s: forgot %d cached responses", name, dropped)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for entry in list(self.registry):
            for model in self.registry.remove(entry.name):
                await model.aclose(drain=False)
        await asyncio.gather(*self._retiring, return_exceptions=True)
        # Waiting for running calls blocks: do it off the event loop.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    # ---- figures -----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The figures metrics report at scrape time.

        Called from the metrics thread while the event loop may add or remove a
        model: reads only, and reads again if the registry changed underneath.
        """
        for _ in range(3):
            try:
                return self._snapshot()
            except RuntimeError:  # "dictionary changed size during iteration"
                continue
        return self._snapshot()

    def _snapshot(self) -> Snapshot:
        models = []
        states: dict[str, int] = {}
        for entry in list(self.registry):
            states[entry.state.value] = states.get(entry.state.value, 0) + 1
            for model in list(entry.versions.values()):
                # Every version in the registry was started before it got there.
                queue, router = model.queue, model.router
                models.append(
                    ModelSnapshot(
                        model=model.name,
                        version=model.version,
                        queue_depth=queue.depth,
                        inflight_batches=queue.inflight,
                        cache_hits=model.stats.cache_hit.count,
                        cache_misses=model.stats.cache_miss.count,
                        inference_count=model.stats.inference_count,
                        execution_count=model.stats.execution_count,
                        arms=router.describe(),
                    )
                )
        cache = self.cache.stats()
        return Snapshot(models, states, cache.used_bytes, cache.entries, cache.evictions)
