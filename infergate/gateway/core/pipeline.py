"""The request path through the core: resolve, validate, execute, answer.

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
from infergate.gateway.core import datatypes
from infergate.gateway.core.errors import GatewayError
from infergate.gateway.core.loader import load_model
from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.registry import ModelRegistry
from infergate.gateway.core.repository import list_models, read_model
from infergate.gateway.core.request import InferRequest, InferResult, OutputTensor
from infergate.gateway.core.validate import validate_request

log = logging.getLogger(__name__)


class InferenceCore:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        options: BackendOptions,
        *,
        worker_threads: int = 2,
        default_max_batch_size: int = 32,
    ) -> None:
        self.backends = dict(backends)
        self.options = options
        self.default_max_batch_size = default_max_batch_size
        self.registry = ModelRegistry()
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, worker_threads), thread_name_prefix="infergate-worker"
        )
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
        for old in self.registry.set_ready(model):
            old.close()
        return model

    def model(self, name: str, version: str = "") -> ModelVersion:
        return self.registry.get(name, version)

    # ---- inference -------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResult:
        started = time.perf_counter_ns()
        model = self.registry.get(request.model_name, request.model_version)
        try:
            result = await self._infer(model, request, started)
        except GatewayError:
            model.stats.record_failure(time.perf_counter_ns() - started)
            raise
        model.stats.record_success(time.perf_counter_ns() - started)
        return result

    async def _infer(self, model: ModelVersion, request: InferRequest, started: int) -> InferResult:
        rows = validate_request(request, model.spec)
        inputs = {t.name: t.data for t in request.inputs}
        input_ns = time.perf_counter_ns() - started
        outputs, queue_ns, infer_ns = await model.execute(inputs, self._executor)
        model.stats.queue.add(queue_ns)
        output_started = time.perf_counter_ns()
        names = request.requested_outputs or model.spec.output_names()
        result = InferResult(
            model_name=model.name,
            model_version=model.version,
            id=request.id,
            outputs=[
                OutputTensor(name, _datatype_of(model, name, outputs), outputs[name])
                for name in names
            ],
        )
        model.stats.record_execution(
            rows, 1, input_ns, infer_ns, time.perf_counter_ns() - output_started
        )
        return result

    # ---- lifecycle -------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Waiting for running calls blocks: do it off the event loop.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        for entry in list(self.registry):
            for model in self.registry.remove(entry.name):
                model.close()


def _datatype_of(model: ModelVersion, name: str, outputs: Mapping[str, object]) -> str:
    spec = next((t for t in model.spec.outputs if t.name == name), None)
    if spec is not None:
        return spec.datatype
    array = outputs[name]
    return datatypes.from_numpy(getattr(array, "dtype")).name  # noqa: B009
