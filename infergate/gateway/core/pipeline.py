"""The request path through the core: resolve, validate, cache, batch, answer.

InferenceCore is what the servicers call. It knows nothing about gRPC: requests
come in as core InferRequests and leave as InferResults or GatewayErrors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from infergate.backends.base import Backend, BackendOptions
from infergate.gateway.core.batch_telemetry import BatchTelemetry
from infergate.gateway.core.batching import policy_from_config
from infergate.gateway.core.cache import ResponseCache, cache_key
from infergate.gateway.core.loader import load_model
from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.registry import ModelRegistry
from infergate.gateway.core.repository import ModelSource, list_models, read_model
from infergate.gateway.core.request import InferRequest, InferResult, OutputTensor
from infergate.gateway.core.routing import DEFAULT_INLINE_BELOW_S, make_policy
from infergate.gateway.core.validate import validate_request
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import GatewayError, InvalidInput, ModelLoadError
from infergate.telemetry import spans
from infergate.telemetry.metrics import Metrics, ModelSnapshot, Snapshot
from infergate.telemetry.tracing import Tracing

log = logging.getLogger(__name__)

# Request parameters the core understands (besides Triton's "timeout").
CACHE_BYPASS = "cache_bypass"  # bool: neither read nor fill the response cache
TIMEOUT_US = "timeout"  # int: Triton's per-request queue timeout, microseconds


class InferenceCore:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        options: BackendOptions,
        *,
        worker_threads: int = 2,
        max_inflight_batches: int = 1,
        inline_below_s: float = DEFAULT_INLINE_BELOW_S,
        default_max_batch_size: int = 32,
        cache_max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.backends = dict(backends)
        self.options = options
        self.default_max_batch_size = default_max_batch_size
        self.max_inflight_batches = max_inflight_batches
        self.inline_below_s = inline_below_s
        self.registry = ModelRegistry()
        self.cache = ResponseCache(cache_max_bytes)
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, worker_threads), thread_name_prefix="infergate-worker"
        )
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self._tracing: Tracing | None = None
        self._metrics: Metrics | None = None

    # ---- models --------------------------------------------------------------

    async def load_repository(self, repository: Path) -> None:
        """Load every model in the repository; a model that fails is reported, not fatal."""
        for name in list_models(repository):
            await self.load_from_repository(repository, name)

    async def load_from_repository(self, repository: Path, name: str) -> ModelVersion | None:
        """Load (or reload) one model; on failure the model's old version keeps serving."""
        self.registry.set_loading(name)
        try:
            source = read_model(repository, name)
            model = await asyncio.to_thread(
                load_model, source, self.backends, self.options, self.default_max_batch_size
            )
        except GatewayError as exc:
            log.error("model %s failed to load: %s", name, exc)
            self.registry.set_failed(name, str(exc))
            return None
        except Exception as exc:  # a runtime bug must not take down the other models
            log.exception("model %s failed to load", name)
            self.registry.set_failed(name, f"{type(exc).__name__}: {exc}")
            return None
        self.serve(model)
        return model

    def attach_telemetry(self, tracing: Tracing, metrics: Metrics) -> None:
        """Report spans and metrics from here on (the server calls this before loading)."""
        self._tracing = tracing if tracing.enabled else None
        self._metrics = metrics

    def serve(self, model: ModelVersion) -> None:
        """Make a loaded model take traffic; versions it replaces drain in the background."""
        telemetry = BatchTelemetry(model.name, self._tracing, self._metrics)
        model.start(self._executor, self.max_inflight_batches, telemetry, self.inline_below_s)
        for old in self.registry.set_ready(model):
            self._retire(old)

    def _retire(self, model: ModelVersion) -> None:
        task = asyncio.get_running_loop().create_task(model.aclose(drain=True))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def model(self, name: str, version: str = "") -> ModelVersion:
        return self.registry.get(name, version)

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
        return Snapshot(
            models, states, self.cache.current_bytes, len(self.cache), self.cache.counters.evictions
        )

    # ---- inference -------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResult:
        started = time.perf_counter_ns()
        model = self.registry.get(request.model_name, request.model_version)
        try:
            outputs = await self._outputs(model, request, started)
        except GatewayError:
            model.stats.record_failure(time.perf_counter_ns() - started)
            raise
        model.stats.record_success(time.perf_counter_ns() - started)
        return InferResult(model.name, model.version, request.id, list(outputs))

    async def _outputs(
        self, model: ModelVersion, request: InferRequest, started: int
    ) -> tuple[OutputTensor, ...]:
        rows = validate_request(request, model.spec)
        names = request.requested_outputs or model.spec.output_names()
        parameters = request.parameters
        requested_timeout_s = _timeout_parameter(parameters)

        async def compute() -> tuple[OutputTensor, ...]:
            inputs = {t.name: t.data for t in request.inputs}
            outputs = await model.queue.submit(inputs, rows, request.timeout_s, requested_timeout_s)
            datatypes = model.spec.output_datatypes
            return tuple(OutputTensor(n, datatypes[n], outputs[n]) for n in names)

        if not model.config.response_cache.enable or parameters.get(CACHE_BYPASS) is True:
            return await compute()
        # The lookup span covers hashing the inputs too: for big tensors that is the cost.
        server_span = spans.current.get()  # set only for a traced (sampled) request
        span = server_span.child("cache lookup") if server_span is not None else None
        key = cache_key(model.name, model.version, request.inputs, names)
        lookup_ns = time.perf_counter_ns() - started
        ttl_s = model.config.response_cache_ttl_ms / 1000

        def looked_up(hit: bool) -> None:
            if span is not None:
                span.attributes["infergate.cache.hit"] = hit
                span.end()

        outputs, hit = await self.cache.get_or_compute(key, compute, ttl_s, looked_up)
        if hit:
            # Triton counts a hit in the queue statistics too (the time before its
            # lookup): perf_analyzer finds the model version by the queue count rising.
            model.stats.queue.add(0)
            model.stats.cache_hit.add(time.perf_counter_ns() - started)
        else:
            # Triton counts the lookup and the insertion as cache-miss time.
            model.stats.cache_miss.add(lookup_ns)
        return outputs

    # ---- lifecycle -------------------------------------------------------------

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

    # ---- run-time model control (driven by infergate.gateway.core.model_control) ----------

    async def load(self, source: ModelSource) -> ModelVersion:
        """Load and warm up a version without serving it; ModelLoadError on any failure."""
        try:
            return await asyncio.to_thread(
                load_model, source, self.backends, self.options, self.default_max_batch_size
            )
        except GatewayError:
            raise
        except Exception as exc:  # a runtime bug fails this load, not the server
            log.exception("model %s failed to load", source.name)
            raise ModelLoadError(
                f"model '{source.name}' failed to load: {type(exc).__name__}: {exc}"
            ) from exc

    async def unload(self, name: str, drain: bool = True) -> list[ModelVersion]:
        """Stop routing requests to a model, finish (or fail) its queue, free it."""
        versions = self.registry.remove(name)
        await asyncio.gather(*(model.aclose(drain=drain) for model in versions))
        return versions

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

    def forget_cached_answers(self) -> None:
        """Drop every cached response: a model name and version may now mean other bytes."""
        self.cache.clear()


def _timeout_parameter(parameters: Mapping[str, object]) -> float | None:
    value = parameters.get(TIMEOUT_US)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(
            f"parameter '{TIMEOUT_US}' must be a non-negative integer (microseconds)"
        )
    return value / 1e6 if value else None
