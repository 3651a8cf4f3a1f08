"""Per-model-version statistics in Triton's layout (served as ModelStatistics).

Updated only from the event loop thread, so no locks. Durations are nanoseconds
from monotonic clocks; counts follow Triton's meaning: inference_count counts rows
(inferences), execution_count counts runtime calls (batches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, BatchStats] = field(default_factory=dict)

    def record_success(self, duration_ns: int) -> None:
        self.success.add(duration_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_failure(self, duration_ns: int) -> None:
        self.fail.add(duration_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_execution(
        self, batch_rows: int, requests: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One runtime call that served `requests` requests of `batch_rows` rows in all."""
        self.execution_count += 1
        self.inference_count += batch_rows
        # Per-request compute figures: each request is charged its batch's time, as
        # Triton does, so averages read as "time a request spent computing".
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)
        batch = self.batches.setdefault(batch_rows, BatchStats())
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)
