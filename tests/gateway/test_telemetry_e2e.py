"""Traces exported to a real OTLP receiver, and /metrics scraped over HTTP."""

from __future__ import annotations

import asyncio
import shutil
import socket
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.clients import build_request
from infergate.gateway.server import GatewayServer
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.settings import Settings
from tests.conftest import DEMO_REPOSITORY
from tests.otlp_receiver import Receiver

CONFIG = """
max_batch_size: 16
dynamic_batching { max_queue_delay_microseconds: 50000 }
response_cache { enable: true }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPOSITORY / "digits" / "1", repo / "digits" / "1")
    (repo / "digits" / "config.pbtxt").write_text(CONFIG)
    return repo


def traceparent(i: int) -> tuple[str, str, str]:
    trace_id = f"{i + 1:032x}"
    parent_id = f"{0xABC0 + i:016x}"
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-01"


async def test_spans_join_the_callers_trace_with_children_and_batch_links(
    repo: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "infergate-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    server = GatewayServer(Settings(model_repository=repo, port=0, metrics_port=0))
    await server.start()
    assert server.tracing.enabled
    callers = [traceparent(i) for i in range(4)]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = [
            stub.ModelInfer(
                build_request("digits", {"x": np.full((1, 64), i, np.float32)}, request_id=f"r{i}"),
                metadata=(("traceparent", header),),
            )
            for i, (_, _, header) in enumerate(callers)
        ]
        await asyncio.gather(*calls)
        await stub.ModelReady(pb.ModelReadyRequest(name="digits"))  # not traced
        bad = build_request("digits", {"x": np.zeros((1, 3), np.float32)})
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ModelInfer(bad, metadata=(("traceparent", traceparent(9)[2]),))
    await server.stop()  # flushes the exporter

    by_trace: dict[str, list] = {}
    for span in receiver.spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    servers = {}
    for trace_id, parent_id, _ in callers:
        spans = by_trace[trace_id]
        (root,) = [s for s in spans if s.name.endswith("/ModelInfer")]
        assert root.parent_span_id == parent_id  # joined the caller's trace
        assert root.service_name == "infergate-test"
        assert root.attributes["infergate.model"] == "digits"
        assert root.attributes["rpc.grpc.status_code"] == 0
        children = {s.name: s for s in spans if s.parent_span_id == root.span_id}
        assert {"cache lookup", "queue wait", "backend"} <= set(children)
        assert children["cache lookup"].attributes["infergate.cache.hit"] is False
        backend = children["backend"].attributes
        backend_name, device, variant = str(backend["infergate.arm"]).split("/")
        assert backend_name in {"onnxruntime", "openvino", "tflite"}
        assert (device, variant) == ("cpu", "fp32")
        servers[root.span_id] = trace_id
    batches = [s for s in receiver.spans if s.name == "batch"]
    linked = {span_id for b in batches for _, span_id in b.links}
    assert set(servers) <= linked  # every request is linked from its batch
    for batch in batches:
        assert batch.attributes["infergate.batch.rows"] == len(batch.links)
        assert batch.attributes["infergate.backend"] in {"onnxruntime", "openvino", "tflite"}
        assert batch.attributes["infergate.device"] == "cpu"
        assert batch.attributes["infergate.variant"] == "fp32"
        assert str(batch.attributes["infergate.arm"]).endswith("/cpu/fp32")
    assert any(len(b.links) > 1 for b in batches)  # requests shared a batch
    (failed,) = by_trace[traceparent(9)[0]]
    assert failed.status_code == 2 and failed.attributes["rpc.grpc.status_code"] == 3
    assert not [s for s in receiver.spans if "ModelReady" in s.name]


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_metrics_move_with_traffic(repo: Path) -> None:
    port = free_port()
    server = GatewayServer(Settings(model_repository=repo, port=0, metrics_port=port))
    await server.start()
    try:
        assert server.metrics_port == port
        before = await asyncio.to_thread(scrape, port)
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            x = np.ones((2, 64), np.float32)
            await asyncio.gather(
                *(stub.ModelInfer(build_request("digits", {"x": x * i})) for i in range(3))
            )
            await stub.ModelInfer(build_request("digits", {"x": x}))  # a cache hit
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ModelInfer(build_request("nope", {"x": x}))
            stats = (
                await stub.ModelStatistics(pb.ModelStatisticsRequest(name="digits"))
            ).model_stats[0]
        after = await asyncio.to_thread(scrape, port)
    finally:
        await server.stop()
    label = '{model="digits",version="1"}'
    assert after['infergate_requests_total{code="OK",model="digits"}'] == 4
    assert after['infergate_requests_total{code="NOT_FOUND",model="_unknown"}'] == 1
    assert after['infergate_request_latency_seconds_count{model="digits"}'] == 4
    assert after[f"infergate_cache_hits_total{label}"] == 1 == stats.inference_stats.cache_hit.count
    assert after[f"infergate_cache_misses_total{label}"] == 3
    assert after[f"infergate_inferences_total{label}"] == stats.inference_count == 6
    assert after[f"infergate_executions_total{label}"] == stats.execution_count
    assert after['infergate_batch_size_rows_sum{model="digits"}'] == 6
    assert after['infergate_queue_latency_seconds_count{model="digits"}'] == 3
    arm_batches = sum(v for k, v in after.items() if k.startswith("infergate_arm_batches_total{"))
    assert arm_batches == stats.execution_count
    computed = {
        k: v for k, v in after.items() if k.startswith("infergate_compute_latency_seconds_count{")
    }
    assert sum(computed.values()) == stats.execution_count
    assert all('model="digits"' in k and 'arm="' in k for k in computed)
    assert after['infergate_models{state="READY"}'] == 1
    assert after["infergate_cache_entries"] == 3 and after["infergate_cache_bytes"] > 0
    assert f"infergate_inferences_total{label}" in before
    assert before[f"infergate_inferences_total{label}"] == 0
