"""A model's counters from the gateway's ModelStatistics, for figures perf_analyzer lacks.

perf_analyzer reports what the client saw; the average batch size the batcher formed,
and the cache's hits and misses, are the server's to tell.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench.gateway_process import Gateway
from infergate.clients import Client


@dataclass(frozen=True)
class ModelCounts:
    inference_count: int = 0  # rows inferred
    execution_count: int = 0  # runtime calls (batches)
    success_count: int = 0  # requests answered
    cache_hits: int = 0
    cache_misses: int = 0

    def __sub__(self, other: ModelCounts) -> ModelCounts:
        return ModelCounts(*(a - b for a, b in zip(self.fields(), other.fields(), strict=True)))

    def __add__(self, other: ModelCounts) -> ModelCounts:
        return ModelCounts(*(a + b for a, b in zip(self.fields(), other.fields(), strict=True)))

    def fields(self) -> tuple[int, ...]:
        return dataclasses.astuple(self)

    @property
    def rows_per_batch(self) -> float | None:
        if not self.execution_count:
            return None
        return self.inference_count / self.execution_count

    @property
    def hit_ratio(self) -> float | None:
        lookups = self.cache_hits + self.cache_misses
        return self.cache_hits / lookups if lookups else None


def read_counts(url: str, model: str, timeout_s: float = 10.0) -> ModelCounts:
    """The model's counters now (all its versions together); InferenceError on failure."""
    with Client(url, timeout_s=timeout_s) as client:
        response = client.model_statistics(model)
    total = ModelCounts()
    for stats in response.model_stats:
        inference = stats.inference_stats
        total += ModelCounts(
            stats.inference_count,
            stats.execution_count,
            inference.success.count,
            inference.cache_hit.count,
            inference.cache_miss.count,
        )
    return total


@dataclass(frozen=True)
class Usage:
    """The gateway's CPU time and a model's counters at one moment."""

    cpu_s: float | None
    counts: ModelCounts | None


def usage(gw: Gateway, model: str) -> Usage:
    try:
        counts: ModelCounts | None = read_counts(gw.url, model)
    except RuntimeError:  # the client's InferenceError
        counts = None
    return Usage(gw.cpu_seconds(), counts)


def cpu_us_per_request(before: Usage, after: Usage) -> float | None:
    """Gateway CPU microseconds per request answered between two snapshots."""
    start, end = before.cpu_s, after.cpu_s
    if start is None or end is None or before.counts is None or after.counts is None:
        return None
    served = (after.counts - before.counts).success_count
    return (end - start) / served * 1e6 if served > 0 else None
