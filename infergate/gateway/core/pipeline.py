"""The request path through the core: resolve, validate, cache, batch, answer.

InferenceCore is what the servicers call. It knows nothing about gRPC: requests
come in as core InferRequests and leave as InferResults or GatewayErrors. Which
models serve is not its business (infergate.gateway.core.lifecycle): it reads the
registry it is given and answers from the cache it is given.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from infergate.gateway.core.cache import ResponseCache, cache_key
from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.registry import ModelRegistry
from infergate.gateway.core.request import InferRequest, InferResult, OutputTensor
from infergate.gateway.core.validate import validate_request
from infergate.schema.errors import GatewayError, InvalidInput
from infergate.telemetry import spans

# Request parameters the core understands (besides Triton's "timeout").
CACHE_BYPASS = "cache_bypass"  # bool: neither read nor fill the response cache
TIMEOUT_US = "timeout"  # int: Triton's per-request queue timeout, microseconds


class InferenceCore:
    def __init__(self, registry: ModelRegistry, cache: ResponseCache) -> None:
        self.registry = registry
        self.cache = cache

    def model(self, name: str, version: str = "") -> ModelVersion:
        return self.registry.get(name, version)

    def admit(self, name: str, version: str = "") -> ModelVersion:
        """The version that would serve a request, if it may be taken now.

        Called before the request is decoded: an unknown model (NOT_FOUND) or a
        full queue (RESOURCE_EXHAUSTED) is refused for the price of two lookups.
        """
        model = self.registry.get(name, version)
        model.queue.check_room()
        return model

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


def _timeout_parameter(parameters: Mapping[str, object]) -> float | None:
    value = parameters.get(TIMEOUT_US)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(
            f"parameter '{TIMEOUT_US}' must be a non-negative integer (microseconds)"
        )
    return value / 1e6 if value else None
