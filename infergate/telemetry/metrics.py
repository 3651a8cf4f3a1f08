"""Prometheus metrics, in a registry owned by one server (no global registry).

Counters and histograms that the request path updates are kept here; figures the
core already keeps (queue depth, cache size and counts, arm statistics, models
loaded) are read at scrape time by a collector over a snapshot callable, so they
cost nothing per request and cannot drift from ModelStatistics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from infergate.schema.arm_stats import ArmStats

log = logging.getLogger(__name__)

_LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ModelSnapshot:
    """What the core reports about one served model version, read at scrape time."""

    model: str
    version: str
    queue_depth: int
    inflight_batches: int
    cache_hits: int
    cache_misses: int
    inference_count: int
    execution_count: int
    arms: list[ArmStats] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    models: list[ModelSnapshot]
    models_by_state: dict[str, int]
    cache_bytes: int
    cache_entries: int
    cache_evictions: int


class _CoreCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        labels = ["model", "version"]
        depth = GaugeMetricFamily(
            "infergate_queue_depth", "Requests waiting in the batch queue", labels=labels
        )
        inflight = GaugeMetricFamily(
            "infergate_inflight_batches", "Batches running now", labels=labels
        )
        hits = CounterMetricFamily(
            "infergate_cache_hits", "Requests answered from the cache", labels=labels
        )
        misses = CounterMetricFamily(
            "infergate_cache_misses", "Cache lookups that missed", labels=labels
        )
        inferences = CounterMetricFamily("infergate_inferences", "Rows inferred", labels=labels)
        executions = CounterMetricFamily(
            "infergate_executions", "Runtime calls (batches)", labels=labels
        )
        arm_labels = [*labels, "arm"]
        arm_batches = CounterMetricFamily(
            "infergate_arm_batches", "Batches run on each arm", labels=arm_labels
        )
        arm_failures = CounterMetricFamily(
            "infergate_arm_failures", "Batches that failed on each arm", labels=arm_labels
        )
        arm_latency = GaugeMetricFamily(
            "infergate_arm_predicted_latency_seconds",
            "Predicted latency of a 1-row batch",
            labels=arm_labels,
        )
        arm_open = GaugeMetricFamily(
            "infergate_arm_circuit_open", "1 while the arm's circuit is open", labels=arm_labels
        )
        for m in snap.models:
            key = [m.model, m.version]
            depth.add_metric(key, m.queue_depth)
            inflight.add_metric(key, m.inflight_batches)
            hits.add_metric(key, m.cache_hits)
            misses.add_metric(key, m.cache_misses)
            inferences.add_metric(key, m.inference_count)
            executions.add_metric(key, m.execution_count)
            for arm in m.arms:
                arm_key = [*key, arm.arm]
                arm_batches.add_metric(arm_key, arm.batches)
                arm_failures.add_metric(arm_key, arm.failures)
                arm_latency.add_metric(arm_key, arm.predicted_one_row_s)
                arm_open.add_metric(arm_key, 1 if arm.circuit == "open" else 0)
        loaded = GaugeMetricFamily("infergate_models", "Models by state", labels=["state"])
        for state, count in sorted(snap.models_by_state.items()):
            loaded.add_metric([state], count)
        cache_bytes = GaugeMetricFamily("infergate_cache_bytes", "Bytes held by the response cache")
        cache_bytes.add_metric([], snap.cache_bytes)
        entries = GaugeMetricFamily("infergate_cache_entries", "Responses held by the cache")
        entries.add_metric([], snap.cache_entries)
        evictions = CounterMetricFamily(
            "infergate_cache_evictions", "Responses evicted to stay within the byte bound"
        )
        evictions.add_metric([], snap.cache_evictions)
        yield from (
            depth,
            inflight,
            hits,
            misses,
            inferences,
            executions,
            arm_batches,
            arm_failures,
            arm_latency,
            arm_open,
            loaded,
            cache_bytes,
            entries,
            evictions,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "infergate_requests",
            "Inference requests by model and gRPC status code",
            ["model", "code"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "infergate_request_latency_seconds",
            "End-to-end request latency in the gateway",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_latency = Histogram(
            "infergate_queue_latency_seconds",
            "Time a request waited for its batch to start",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.compute_latency = Histogram(
            "infergate_compute_latency_seconds",
            "Time the runtime took for a batch",
            ["model", "arm"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "infergate_batch_size_rows",
            "Rows per executed batch",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        # Each update's labelled child, kept: prometheus-client's labels() costs about
        # 1 us a call, more than the update, and these run for every request or batch.
        self._request_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._queue_children: dict[str, Any] = {}
        self._batch_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def watch(self, snapshot: Callable[[], Snapshot]) -> None:
        """Report the core's own figures at every scrape."""
        self.registry.register(_CoreCollector(snapshot))

    def observe_request(self, model: str, code: str, seconds: float) -> None:
        children = self._request_children.get((model, code))
        if children is None:
            children = (self.requests.labels(model, code), self.request_latency.labels(model))
            self._request_children[(model, code)] = children
        children[0].inc()
        if code == "OK":
            children[1].observe(seconds)

    def observe_queue(self, model: str, seconds_each: Iterable[float]) -> None:
        histogram = self._queue_children.get(model)
        if histogram is None:
            histogram = self._queue_children[model] = self.queue_latency.labels(model)
        for seconds in seconds_each:
            histogram.observe(seconds)

    def observe_batch(self, model: str, arm: str, rows: int, seconds: float) -> None:
        children = self._batch_children.get((model, arm))
        if children is None:
            children = (self.batch_size.labels(model), self.compute_latency.labels(model, arm))
            self._batch_children[(model, arm)] = children
        children[0].observe(rows)
        children[1].observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP on a thread of its own; returns the bound port."""
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound = int(self._server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
