"""A loaded model version: its config, spec, runtime, batch queue and statistics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from infergate.backends.base import LoadedModel
from infergate.gateway.core.batching import BatchQueue, policy_from_config
from infergate.gateway.core.errors import BackendFailed, Unavailable
from infergate.gateway.core.spec import ModelSpec
from infergate.gateway.core.stats import ModelStats
from infergate.protocol import model_config_pb2 as mc


@dataclass
class ModelVersion:
    name: str
    version: str
    config: mc.ModelConfig
    spec: ModelSpec
    backend: str
    runtime: LoadedModel
    platform: str
    stats: ModelStats = field(default_factory=ModelStats)
    _queue: BatchQueue | None = field(default=None, repr=False)
    _executor: Executor | None = field(default=None, repr=False)

    def start(self, executor: Executor, max_inflight: int) -> None:
        """Start serving: create the batch queue (needs the running event loop)."""
        self._executor = executor
        self._queue = BatchQueue(
            f"{self.name}:{self.version}",
            policy_from_config(self.config, max_inflight),
            self.execute,
            self.stats,
        )

    @property
    def queue(self) -> BatchQueue:
        if self._queue is None:
            raise Unavailable(f"model '{self.name}' version {self.version} is not started")
        return self._queue

    async def execute(
        self, inputs: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], int, int]:
        """Run one batch in a worker thread.

        Returns the outputs, the ns spent waiting for a worker, and the ns the
        runtime took.
        """
        assert self._executor is not None, "start() first"
        loop = asyncio.get_running_loop()
        submitted = time.perf_counter_ns()

        def run() -> tuple[dict[str, np.ndarray], int, int]:
            started = time.perf_counter_ns()
            outputs = self.runtime.infer(inputs)
            return outputs, started, time.perf_counter_ns()

        try:
            outputs, started, finished = await loop.run_in_executor(self._executor, run)
        except Exception as exc:
            raise BackendFailed(
                f"model '{self.name}' version {self.version} failed in {self.backend}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return outputs, started - submitted, finished - started

    async def aclose(self, drain: bool = True) -> None:
        """Finish (or fail) queued requests, then free the runtime."""
        if self._queue is not None:
            await self._queue.aclose(drain=drain)
        self.runtime.close()
