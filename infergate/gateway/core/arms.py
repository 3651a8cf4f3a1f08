"""An arm: one way to run a model (backend x device x variant), and what is known of it.

Each arm keeps its latency model, the work it has in flight (for the expected
completion time of the next batch), its failures and its circuit breaker.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

from infergate.backends.base import LoadedModel
from infergate.gateway.core.latency import LatencyModel
from infergate.schema.tensors import Tensors

# Consecutive failures that open an arm's circuit, and how long it stays open.
FAILURES_TO_OPEN = 3
COOL_DOWN_S = 5.0


class Circuit(enum.Enum):
    CLOSED = "closed"  # in use
    OPEN = "open"  # failing: skipped until its cool-down ends
    HALF_OPEN = "half_open"  # cool-down over: the next batch probes it


@dataclass(eq=False)
class DeviceLoad:
    """Work running on one device, shared by every arm that runs there.

    Arms on the same device (onnxruntime and openvino, both on the CPU) take their
    cores from each other: a batch queued behind another on the CPU waits whichever
    runtime it goes to. So backlog is counted per device, and overflow to another
    arm pays only when that arm is on another device.
    """

    capacity: int = 1  # batches the device runs side by side before they slow each other
    # Predicted seconds of each batch now running, by batch id: (start, predicted).
    running: dict[int, tuple[float, float]] = field(default_factory=dict)

    def backlog_s(self, now: float) -> float:
        """Predicted seconds until the work already running here is done."""
        remaining = sum(
            max(0.0, start + predicted - now) for start, predicted in self.running.values()
        )
        return remaining / max(1, self.capacity)


@dataclass(eq=False)
class Arm:
    backend: str
    device: str
    variant: str
    runtime: LoadedModel
    latency: LatencyModel = field(default_factory=LatencyModel)
    # Shared with the model's other arms on the same device (see DeviceLoad).
    load: DeviceLoad = field(default_factory=DeviceLoad)
    batches: int = 0
    rows: int = 0
    busy_s: float = 0.0  # runtime seconds over every batch it ran
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    circuit: Circuit = Circuit.CLOSED
    open_until: float = 0.0
    last_used: float = float("-inf")  # clock time of the last batch it ran
    # Inputs this arm is known to run (its warm-up): after a failed call, a canary
    # that still runs shows the failure came from the call's inputs, not the arm.
    canary: Tensors | None = field(default=None, repr=False)

    @functools.cached_property
    def name(self) -> str:
        # Cached: read for every batch, and the three parts never change.
        return f"{self.backend}/{self.device}/{self.variant}"

    @property
    def device_kind(self) -> str:
        return self.device.split(":", 1)[0]

    def matches(self, wanted: str) -> bool:
        """Whether `wanted` names this arm: a backend name or a full arm name."""
        return wanted in (self.name, self.backend)

    def expected_completion_s(self, rows: int, now: float) -> float:
        """Work already queued on its device, plus this batch's predicted latency."""
        return self.load.backlog_s(now) + self.latency.predict_s(rows)

    def usable(self, now: float) -> bool:
        """Closed, or open with its cool-down over (then it becomes half-open)."""
        if self.circuit is Circuit.OPEN and now >= self.open_until:
            self.circuit = Circuit.HALF_OPEN
        return self.circuit is not Circuit.OPEN

    def record_success(self, rows: int, seconds: float, now: float) -> None:
        self.batches += 1
        self.rows += rows
        self.busy_s += seconds
        self.last_used = now
        self.consecutive_failures = 0
        self.circuit = Circuit.CLOSED
        self.latency.observe(rows, seconds)

    def record_hang(self, error: str, now: float) -> None:
        """A call that never came back: no more work goes here until the cool-down ends."""
        self.record_failure(error, now)
        self.circuit = Circuit.OPEN
        self.open_until = now + COOL_DOWN_S

    def record_failure(self, error: str, now: float) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = error
        self.last_used = now
        if self.circuit is Circuit.HALF_OPEN or self.consecutive_failures >= FAILURES_TO_OPEN:
            self.circuit = Circuit.OPEN
            self.open_until = now + COOL_DOWN_S
