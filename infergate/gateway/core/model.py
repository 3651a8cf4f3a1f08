"""A loaded model version: its config, its spec, its runtime, its statistics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from infergate.backends.base import LoadedModel
from infergate.gateway.core.errors import BackendFailed
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

    async def execute(
        self, inputs: Mapping[str, np.ndarray], executor: Executor
    ) -> tuple[dict[str, np.ndarray], int, int]:
        """Run one batch in a worker thread.

        Returns the outputs, the ns spent waiting for a worker, and the ns the
        runtime took.
        """
        loop = asyncio.get_running_loop()
        submitted = time.perf_counter_ns()

        def run() -> tuple[dict[str, np.ndarray], int, int]:
            started = time.perf_counter_ns()
            outputs = self.runtime.infer(inputs)
            return outputs, started, time.perf_counter_ns()

        try:
            outputs, started, finished = await loop.run_in_executor(executor, run)
        except Exception as exc:
            raise BackendFailed(
                f"model '{self.name}' version {self.version} failed in {self.backend}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return outputs, started - submitted, finished - started

    def close(self) -> None:
        self.runtime.close()
