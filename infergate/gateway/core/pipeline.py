"""The request path through the core: resolve, validate, cache, batch, answer.

InferenceCore is what the servicers call. It knows nothing about gRPC: requests
come in as core InferRequests and leave as InferResults or GatewayErrors. Which
models serve is not its business (infergate.gateway.core.lifecycle): it reads the
registry it is given and answers from the cache it is given.

Two of Triton's extensions run here: a stateful model's requests go through its
sequence scheduler (infergate.gateway.core.sequences) instead of straight to the
batch queue, and never through the response cache (an answer depends on the
sequence's past); an output requested as a classification is answered as its
top-k classes (infergate.gateway.core.classification), after the cache, which
keeps the values.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from infergate.gateway.core.cache import ResponseCache, cache_key
from infergate.gateway.core.classification import class_counts, classify
from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.registry import ModelRegistry
from infergate.gateway.core.request import InferRequest, InferResult, OutputTensor
from infergate.gateway.core.runtime_config import labels_of
from infergate.gateway.core.sequence_spec import SequenceSpec
from infergate.gateway.core.sequences import SequenceScheduler
from infergate.gateway.core.validate import validate_outputs, validate_request
from infergate.schema.errors import GatewayError, InvalidInput, ModelNotFound, shown
from infergate.telemetry import spans

# Request parameters the core understands (besides Triton's "timeout").
CACHE_BYPASS = "cache_bypass"  # bool: neither read nor fill the response cache
TIMEOUT_US = "timeout"  # int: Triton's per-request queue timeout, microseconds
# Triton's words for a model or version that does not serve, which tools match on.
UNKNOWN_MODEL = "Request for unknown model"


class InferenceCore:
    def __init__(self, registry: ModelRegistry, cache: ResponseCache) -> None:
        self.registry = registry
        self.cache = cache
        # Per sequence model version (name, version): its scheduler, while that
        # version object serves.
        self._sequences: dict[tuple[str, str], SequenceScheduler] = {}

    def model(self, name: str, version: str = "") -> ModelVersion:
        """The version that serves `name` (the newest ready one for version "").

        ModelNotFound and ModelNotReady as the registry raises them, worded so that
        they also carry Triton's phrases: "Request for unknown model" for a model or
        version that is not there, "failed to get model version from specified
        version string" (INVALID_ARGUMENT) for a version that is not a number.
        """
        check_version_string(version)
        try:
            return self.registry.get(name, version)
        except ModelNotFound as exc:
            raise ModelNotFound(f"{UNKNOWN_MODEL}: {exc}") from None

    def admit(self, name: str, version: str = "") -> ModelVersion:
        """The version that would serve a request, if it may be taken now.

        Called before the request is decoded: an unknown model (NOT_FOUND) or a
        full queue (RESOURCE_EXHAUSTED) is refused for the price of two lookups.
        """
        model = self.model(name, version)
        model.queue.check_room()
        return model

    def sequence_scheduler(self, model: ModelVersion) -> SequenceScheduler | None:
        """The scheduler of a sequence model's version (None for any other model)."""
        if not model.config.HasField("sequence_batching"):
            return None
        key = (model.name, model.version)
        scheduler = self._sequences.get(key)
        if scheduler is not None and scheduler.queue is model.queue:
            return scheduler
        spec = SequenceSpec.from_config(model.config)
        assert spec is not None  # checked at load
        # A version replaced (reloaded) starts afresh: its sequences are gone.
        self._forget_unserved()
        scheduler = SequenceScheduler(spec, model.queue, model.router.pick_arm)
        self._sequences[key] = scheduler
        return scheduler

    def _forget_unserved(self) -> None:
        for (name, version), scheduler in list(self._sequences.items()):
            try:
                served = self.registry.get(name, version).queue is scheduler.queue
            except GatewayError:
                served = False
            if not served:
                del self._sequences[(name, version)]

    # ---- inference -------------------------------------------------------------

    async def infer(self, request: InferRequest, model: ModelVersion | None = None) -> InferResult:
        """Answer a request; `model`: the version admit() gave for it, if the caller
        already looked it up (the same one, or a newer one if a reload came between)."""
        started = time.perf_counter_ns()
        if model is None:
            model = self.model(request.model_name, request.model_version)
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
        if request.inputs_checked_for is model.spec:
            rows = request.rows
            validate_outputs(request.model_name, request.requested_outputs, model.spec)
        else:
            rows = validate_request(request, model.spec)
        if model.capture is not None:  # opt-in (capture_rows): calibration from traffic
            model.capture.offer({t.name: t.data for t in request.inputs})
        classes = class_counts(request, model.spec) if request.output_parameters else {}
        outputs = await self._values(model, request, rows, started)
        if not classes:
            return outputs
        labels = labels_of(model.runtime)
        batches = model.spec.max_batch_size > 0
        return tuple(
            OutputTensor(
                o.name,
                "BYTES",
                classify(o.name, o.data, classes[o.name], labels.get(o.name, ()), batches),
            )
            if o.name in classes
            else o
            for o in outputs
        )

    async def _values(
        self, model: ModelVersion, request: InferRequest, rows: int, started: int
    ) -> tuple[OutputTensor, ...]:
        names = request.requested_outputs or model.spec.output_names()
        parameters = request.parameters
        requested_timeout_s = _timeout_parameter(parameters)
        datatypes = model.spec.output_datatypes
        scheduler = self.sequence_scheduler(model)
        if scheduler is not None:
            inputs = {t.name: t.data for t in request.inputs}
            values = await scheduler.infer(
                inputs, rows, parameters, request.timeout_s, requested_timeout_s
            )
            return tuple(OutputTensor(n, datatypes[n], values[n]) for n in names)

        async def compute() -> tuple[OutputTensor, ...]:
            inputs = {t.name: t.data for t in request.inputs}
            outputs = await model.queue.submit(inputs, rows, request.timeout_s, requested_timeout_s)
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


def check_version_string(version: str) -> None:
    """A version names a number (Triton's versions are positive integers)."""
    if version and not (version.isascii() and version.isdigit()):
        raise InvalidInput(
            f"failed to get model version from specified version string {shown(version)}: "
            "a version is a positive integer (or empty for the newest)"
        )


def _timeout_parameter(parameters: Mapping[str, object]) -> float | None:
    value = parameters.get(TIMEOUT_US)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(
            f"parameter '{TIMEOUT_US}' must be a non-negative integer (microseconds)"
        )
    return value / 1e6 if value else None
