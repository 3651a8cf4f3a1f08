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
from pathlib import Path

from infergate.backends.base import Backend, BackendOptions
from infergate.gateway.core.cache import ResponseCache, cache_key
from infergate.gateway.core.errors import GatewayError, InvalidInput
from infergate.gateway.core.loader import load_model
from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.registry import ModelRegistry
from infergate.gateway.core.repository import list_models, read_model
from infergate.gateway.core.request import InferRequest, InferResult, OutputTensor
from infergate.gateway.core.validate import validate_request

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
        max_inflight_batches: int = 2,
        default_max_batch_size: int = 32,
        cache_max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.backends = dict(backends)
        self.options = options
        self.default_max_batch_size = default_max_batch_size
        self.max_inflight_batches = max_inflight_batches
        self.registry = ModelRegistry()
        self.cache = ResponseCache(cache_max_bytes)
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, worker_threads), thread_name_prefix="infergate-worker"
        )
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

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

    def serve(self, model: ModelVersion) -> None:
        """Make a loaded model take traffic; versions it replaces drain in the background."""
        model.start(self._executor, self.max_inflight_batches)
        for old in self.registry.set_ready(model):
            self._retire(old)

    def _retire(self, model: ModelVersion) -> None:
        task = asyncio.get_running_loop().create_task(model.aclose(drain=True))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def model(self, name: str, version: str = "") -> ModelVersion:
        return self.registry.get(name, version)

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
            datatypes = {t.name: t.datatype for t in model.spec.outputs}
            return tuple(OutputTensor(n, datatypes[n], outputs[n]) for n in names)

        if not model.config.response_cache.enable or parameters.get(CACHE_BYPASS) is True:
            return await compute()
        key = cache_key(model.name, model.version, request.inputs, names)
        lookup_ns = time.perf_counter_ns() - started
        ttl_s = model.config.response_cache_ttl_ms / 1000
        outputs, hit = await self.cache.get_or_compute(key, compute, ttl_s)
        if hit:
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


def _timeout_parameter(parameters: Mapping[str, object]) -> float | None:
    value = parameters.get(TIMEOUT_US)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(
            f"parameter '{TIMEOUT_US}' must be a non-negative integer (microseconds)"
        )
    return value / 1e6 if value else None
