"""A small request cannot make the gateway allocate much, nor stall other clients
(issue 16, item 2): sizes are checked against the bytes sent before decoding."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from tests import onnx_models
from tests.cli_gateway import CliGateway, cli_gateway
from tests.conftest import DEMO_REPOSITORY

RSS_GROWTH_LIMIT_MB = 20.0
STALL_LIMIT_S = 0.25


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliGateway]:
    workdir = tmp_path_factory.mktemp("memory")
    repository = workdir / "repository"
    shutil.copytree(DEMO_REPOSITORY / "digits", repository / "digits")
    # Fixed first dim: no batching, so any length of the second passes the spec and
    # only the byte count can refuse a claim.
    onnx_models.identity_model(repository / "strings" / "1" / "model.onnx", "BYTES", dims=(4, "n"))
    with cli_gateway(workdir, repository) as gateway:
        yield gateway


def bomb(model: str, input_name: str, shape: list[int]) -> pb.ModelInferRequest:
    """33 bytes on the wire claiming 250 million BYTES elements."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype="BYTES", shape=shape)
    request.raw_input_contents.append(b"\x05\x00\x00\x00hello" + b"\x00" * 24)
    return request


def good() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
    return request


@pytest.mark.parametrize(
    ("model", "input_name", "shape", "fragment"),
    [
        ("digits", "x", [250_000_000, 1], "must be FP32"),  # the model takes no BYTES
        ("strings", "in", [4, 62_500_000], "take at least 1000000000 bytes"),  # it does
    ],
)
def test_a_33_byte_request_claiming_250_million_elements_is_refused_at_once(
    live: CliGateway, model: str, input_name: str, shape: list[int], fragment: str
) -> None:
    with grpc.insecure_channel(live.url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(good(), timeout=10)
        peak_before = live.peak_rss_mb()
        slowest_good_s = 0.0
        done = threading.Event()

        def good_client() -> None:
            nonlocal slowest_good_s
            while not done.is_set():
                started = time.monotonic()
                stub.ModelInfer(good(), timeout=10)
                slowest_good_s = max(slowest_good_s, time.monotonic() - started)

        beside = threading.Thread(target=good_client)
        beside.start()
        try:
            time.sleep(0.1)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(bomb(model, input_name, shape), timeout=10)
            time.sleep(0.1)
        finally:
            done.set()
            beside.join()
        growth_mb = live.peak_rss_mb() - peak_before
    slowest_ms = slowest_good_s * 1000
    print(f"\n{model}: peak RSS +{growth_mb:.1f} MB, slowest good request {slowest_ms:.1f} ms")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (caught.value.details() or "")
    assert growth_mb < RSS_GROWTH_LIMIT_MB
    assert slowest_good_s < STALL_LIMIT_S


def test_a_bytes_input_of_many_elements_still_decodes(live: CliGateway) -> None:
    """The bound is on claims the bytes cannot back, not on honest big inputs."""
    values = [str(i).encode() for i in range(20_000)]  # decoded on a worker thread
    request = pb.ModelInferRequest(model_name="strings")
    request.inputs.add(name="in", datatype="BYTES", shape=[4, len(values) // 4])
    request.raw_input_contents.append(b"".join(len(v).to_bytes(4, "little") + v for v in values))
    with grpc.insecure_channel(live.url) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert list(response.outputs[0].shape) == [4, len(values) // 4]
    assert response.raw_output_contents[0] == request.raw_input_contents[0]
