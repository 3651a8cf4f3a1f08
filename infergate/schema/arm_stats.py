"""What is known of one arm of a model, as a plain record.

The router makes these (Router.describe); DescribeModel and the Prometheus metrics
read them. Here, below both, so that telemetry (a leaf) can read what the core
reports without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArmStats:
    arm: str  # backend/device/variant
    backend: str
    device: str
    variant: str
    batches: int
    share: float  # of the model's batches, 0..1
    rows: int
    mean_batch_ms: float
    fixed_ms: float  # the latency model's fitted cost per call
    per_row_ms: float  # and per row
    p50_ms: float
    p95_ms: float
    failures: int
    circuit: str  # "closed", "open" or "half_open"
    last_error: str

    @property
    def mean_rows_per_batch(self) -> float:
        return self.rows / self.batches if self.batches else 0.0

    @property
    def predicted_one_row_s(self) -> float:
        """The latency model's prediction for a one-row batch, in seconds."""
        return (self.fixed_ms + self.per_row_ms) / 1000
