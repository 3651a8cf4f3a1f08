"""SIGTERM drains before it stops (issue 16, item 7): health says NOT_SERVING while
calls are still answered, so a client (or load balancer) that follows health loses
none; then the listener closes and in-flight calls finish."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from tests.cli_gateway import cli_gateway
from tests.conftest import DEMO_REPOSITORY

DRAIN_S = 2.0


def good() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
    return request


def test_a_client_that_follows_health_loses_no_call_on_sigterm(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(DEMO_REPOSITORY / "digits", repository / "digits")
    with (
        cli_gateway(tmp_path, repository, ["--drain-s", str(DRAIN_S)]) as gateway,
        grpc.insecure_channel(gateway.url) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        serving = threading.Event()
        serving.set()
        answered = failed = 0
        answered_after_not_serving = 0
        stop = threading.Event()

        def follow_health() -> None:
            while not stop.is_set():
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    status = health_pb2.HealthCheckResponse.NOT_SERVING
                if status != health_pb2.HealthCheckResponse.SERVING:
                    serving.clear()
                time.sleep(0.02)

        def send() -> None:
            nonlocal answered, failed, answered_after_not_serving
            while not stop.is_set():
                if not serving.is_set():
                    time.sleep(0.01)  # a balancer would send it elsewhere now
                    continue
                try:
                    stub.ModelInfer(good(), timeout=5)
                    answered += 1
                    if not serving.is_set():
                        answered_after_not_serving += 1
                except grpc.RpcError:
                    failed += 1

        threads = [threading.Thread(target=follow_health)]
        threads += [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        sent_sigterm = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        while serving.is_set() and time.monotonic() - sent_sigterm < 2:
            time.sleep(0.01)
        seen_not_serving_s = time.monotonic() - sent_sigterm
        # Within the drain, the gateway still answers a straggler's call.
        time.sleep(DRAIN_S / 4)
        late = stub.ModelInfer(good(), timeout=5)
        assert gateway.process.wait(timeout=DRAIN_S + 15) == 0
        stopped_s = time.monotonic() - sent_sigterm
        stop.set()
        for thread in threads:
            thread.join()
    assert late.raw_output_contents
    assert failed == 0, f"{failed} calls failed ({answered} answered)"
    assert answered > 20
    assert seen_not_serving_s < 1.0, "health did not report NOT_SERVING promptly"
    assert stopped_s >= DRAIN_S, "the listener closed before the drain was over"
    assert "draining for 2.0s" in gateway.log_text()
