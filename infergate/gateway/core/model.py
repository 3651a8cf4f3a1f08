"""A loaded model version: its config, spec, arms, router, batch queue and statistics."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

from infergate.backends.base import LoadedModel
from infergate.gateway.core.arms import Arm
from infergate.gateway.core.batch_telemetry import BatchTelemetry
from infergate.gateway.core.batching import BatchQueue, policy_from_config
from infergate.gateway.core.routing import DEFAULT_RUN_OPTIONS, Router, RunOptions, make_policy
from infergate.gateway.core.stats import ModelStats
from infergate.optimize.reservoir import ReservoirSampler
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import Unavailable
from infergate.schema.tensors import ModelSpec


@dataclass(frozen=True)
class ExecutionChoice:
    """How a version's batches run, each choice with its reason (the gateway's
    settings, the machine, or the model's config)."""

    intra_op_threads: int  # 0: each runtime's own default
    intra_op_threads_reason: str
    max_inflight_batches: int  # per device
    max_inflight_batches_reason: str


@dataclass
class ModelVersion:
    name: str
    version: str
    config: mc.ModelConfig
    spec: ModelSpec
    arms: list[Arm]
    platform: str
    stats: ModelStats = field(default_factory=ModelStats)
    # Backends that could have run it but failed to load, with why.
    arm_errors: dict[str, str] = field(default_factory=dict)
    # Batches that may run side by side per device, from the config's instance
    # groups; None: the gateway's --max-inflight-batches.
    instances: int | None = None
    # A uniform sample of live request inputs (config capture_rows), for calibrating
    # variants on real traffic; None: not captured.
    capture: ReservoirSampler | None = field(default=None, repr=False)
    # How its batches run and why (set when it starts serving), for DescribeModel.
    execution: ExecutionChoice | None = None
    _router: Router | None = field(default=None, repr=False)
    _queue: BatchQueue | None = field(default=None, repr=False)

    @property
    def backend(self) -> str:
        """The backend of the first arm (the only one when the model is pinned)."""
        return self.arms[0].backend

    @property
    def runtime(self) -> LoadedModel:
        return self.arms[0].runtime

    def start(
        self,
        executor: Executor,
        max_inflight: int,
        telemetry: BatchTelemetry | None = None,
        run_options: RunOptions = DEFAULT_RUN_OPTIONS,
    ) -> None:
        """Start serving: router and batch queue (the queue needs the running loop).

        Each device may run max_inflight batches side by side, so the model as a
        whole may have that many per device in flight: overflow can go to an arm
        on another device.
        """
        self._router = Router(
            f"{self.name}:{self.version}",
            self.arms,
            make_policy(self.config.routing, self.arms),
            executor,
            options=run_options,
        )
        for arm in self.arms:
            arm.load.capacity = max_inflight
        devices = len({arm.device for arm in self.arms})
        self._queue = BatchQueue(
            f"{self.name}:{self.version}",
            policy_from_config(self.config, max_inflight * devices),
            self._router.execute,
            self.stats,
            telemetry,
            waiting_pays=self._router.waiting_pays,
        )

    @property
    def queue(self) -> BatchQueue:
        if self._queue is None:
            raise Unavailable(f"model '{self.name}' version {self.version} is not started")
        return self._queue

    @property
    def router(self) -> Router:
        if self._router is None:
            raise Unavailable(f"model '{self.name}' version {self.version} is not started")
        return self._router

    async def aclose(self, drain: bool = True) -> None:
        """Finish (or fail) queued requests, then free every runtime."""
        if self._queue is not None:
            await self._queue.aclose(drain=drain)
        for arm in self.arms:
            arm.runtime.close()
