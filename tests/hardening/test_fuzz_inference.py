"""Property-based fuzzing of ModelInfer and ModelStreamInfer against a live gateway.

Generated requests are malformed in every way the protocol allows (names, versions,
datatypes, shapes, raw and typed contents, BYTES framing, parameters, requested
outputs; huge, empty and control-character values). Properties, for every one:
- an answer comes (no hang) with a status of the documented classes, never
  INTERNAL or UNKNOWN, and a failure's message is non-empty and bounded;
- the gateway stays up, its memory stays bounded, and a good request right after
  succeeds.
`make test` runs FUZZ_EXAMPLES (default 300) examples; `make bench` runs many more.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from tests import onnx_models
from tests.cli_gateway import CliGateway, cli_gateway
from tests.conftest import DEMO_REPOSITORY

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
# What a malformed request may get: each names the problem (checked by the
# targeted tests); INTERNAL or UNKNOWN would mean an unmapped failure.
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
MAX_DETAILS = 4096  # a status message longer than this echoes too much input
RSS_GROWTH_LIMIT_MB = 300.0
DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES", "BF16",
]  # fmt: skip

weird_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\0", "x\n", "1\0", "../..", "%s%n", "\u202e", "x" * 5000]),
)
names = st.one_of(st.sampled_from(["x", "y", "a", "b", "sum", "difference"]), weird_text)


# Mostly real models and the default version, so that most requests get past the
# lookup and exercise decoding and validation.
def mostly(usual: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`usual` seven times in ten (one_of would give each branch its own share)."""
    return st.integers(0, 9).flatmap(lambda i: usual if i < 7 else odd)


models = mostly(
    st.sampled_from(["digits", "addsub", "cnn"]), st.one_of(weird_text, st.just("m" * 200_000))
)
versions = mostly(
    st.just(""), st.one_of(st.sampled_from(["1", "2", "0", "-1", "01", " 1", "1\n"]), weird_text)
)
dims = st.one_of(
    st.integers(-2, 70),
    st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1, -(2**63), 250_000_000]),
)
shapes = st.one_of(
    st.lists(dims, max_size=6),
    st.just([2, 64]),
    st.just([1, 2]),
    st.lists(st.integers(0, 2), min_size=40, max_size=90),  # ranks past numpy's limit
)
raw_bytes = st.one_of(
    st.binary(max_size=600),
    st.just(b"\xff\xff\xff\x7f" + b"a"),  # BYTES element claiming 2 GB
    st.just(b"\x00\x00\x00\x00" * 33),
    st.just(np.zeros((2, 64), np.float32).tobytes()),
    st.just(np.ones((1, 2), np.float32).tobytes()),
)


@st.composite
def parameter(draw: st.DrawFn) -> pb.InferParameter:
    kind = draw(st.sampled_from(["bool", "int", "str", "float", "uint", "none"]))
    if kind == "bool":
        return pb.InferParameter(bool_param=draw(st.booleans()))
    if kind == "int":
        return pb.InferParameter(int64_param=draw(st.integers(-(2**63), 2**63 - 1)))
    if kind == "str":
        return pb.InferParameter(string_param=draw(weird_text))
    if kind == "float":
        return pb.InferParameter(double_param=draw(st.floats(allow_nan=True)))
    if kind == "uint":
        return pb.InferParameter(uint64_param=draw(st.integers(0, 2**64 - 1)))
    return pb.InferParameter()


parameter_keys = st.one_of(
    st.sampled_from(["timeout", "cache_bypass", "sequence_id", "priority", "shared_memory_region"]),
    weird_text,
)


@st.composite
def requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=draw(models), model_version=draw(versions), id=draw(weird_text)
    )
    use_raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(
            name=draw(names),
            datatype=draw(st.one_of(st.sampled_from(DATATYPES), weird_text)),
            shape=draw(shapes),
        )
        if use_raw:
            request.raw_input_contents.append(draw(raw_bytes))
        elif draw(st.booleans()):
            field = draw(
                st.sampled_from(
                    ["fp32_contents", "int_contents", "int64_contents", "bytes_contents",
                     "bool_contents", "uint64_contents", "fp64_contents"]
                )
            )  # fmt: skip
            values = {
                "fp32_contents": st.floats(width=32),
                "fp64_contents": st.floats(),
                "int_contents": st.integers(-(2**31), 2**31 - 1),
                "int64_contents": st.integers(-(2**63), 2**63 - 1),
                "uint64_contents": st.integers(0, 2**64 - 1),
                "bool_contents": st.booleans(),
                "bytes_contents": st.binary(max_size=20),
            }[field]
            getattr(tensor.contents, field).extend(draw(st.lists(values, max_size=200)))
        for key in draw(st.lists(parameter_keys, max_size=2)):
            tensor.parameters[key].CopyFrom(draw(parameter()))
    if draw(st.booleans()) and request.raw_input_contents:
        request.raw_input_contents.append(draw(raw_bytes))  # one entry too many
    for key in draw(st.lists(parameter_keys, max_size=3)):
        request.parameters[key].CopyFrom(draw(parameter()))
    for name in draw(st.lists(names, max_size=2)):
        request.outputs.add(name=name)
    return request


def good_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.ones((1, 64), np.float32).tobytes())
    return request


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliGateway]:
    workdir = tmp_path_factory.mktemp("fuzz")
    repository = workdir / "repository"
    for name in ("digits", "cnn"):
        shutil.copytree(DEMO_REPOSITORY / name, repository / name)
    onnx_models.add_model(repository / "addsub" / "1" / "model.onnx")
    with cli_gateway(workdir, repository) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def stub(live: CliGateway) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(live.url, options=options) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _call(
    stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest
) -> grpc.RpcError | None:
    try:
        stub.ModelInfer(request, timeout=20)
    except grpc.RpcError as exc:
        return exc
    return None


def _check(error: grpc.RpcError | None, counts: collections.Counter[str]) -> None:
    if error is None:
        counts["OK"] += 1
        return
    code, details = error.code(), error.details() or ""  # type: ignore[attr-defined]
    counts[code.name] += 1
    assert code in ALLOWED, f"{code.name}: {details[:500]}"
    assert details, f"{code.name} without a message"
    assert len(details) <= MAX_DETAILS, f"{len(details)}-character message: {details[:200]}..."


def _report(name: str, counts: collections.Counter[str]) -> None:
    """Case counts by status, for the record (FUZZ_REPORT names a JSON file to extend)."""
    target = os.environ.get("FUZZ_REPORT")
    print(f"\n{name}: {dict(counts)}")
    if target:
        path = Path(target)
        report = json.loads(path.read_text()) if path.exists() else {}
        report[name] = dict(counts)
        path.write_text(json.dumps(report, indent=2))


# The suite's 120 s per-test limit fits the short form; `make bench` asks for thousands.
@pytest.mark.timeout(120 + EXAMPLES // 20)
def test_fuzzed_model_infer(live: CliGateway, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    counts: collections.Counter[str] = collections.Counter()
    rss_before = live.rss_mb()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def one(request: pb.ModelInferRequest) -> None:
        _check(_call(stub, request), counts)
        assert live.process.poll() is None, "the gateway died:\n" + live.log_text()[-3000:]

    one()
    _report("ModelInfer", counts)
    stub.ModelInfer(good_request(), timeout=20)
    assert live.rss_mb() - rss_before < RSS_GROWTH_LIMIT_MB


@pytest.mark.timeout(120 + EXAMPLES // 20)
def test_fuzzed_model_stream_infer(
    live: CliGateway, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    counts: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=max(20, EXAMPLES // 10),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(requests(), min_size=1, max_size=8))
    def one(batch: list[pb.ModelInferRequest]) -> None:
        sent = [*batch, good_request()]
        answers = list(stub.ModelStreamInfer(iter(sent), timeout=30))
        assert len(answers) == len(sent), "a request on the stream went unanswered"
        for answer in answers:
            counts["error" if answer.error_message else "OK"] += 1
            assert len(answer.error_message) <= MAX_DETAILS
            assert "internal error" not in answer.error_message, answer.error_message

    one()
    _report("ModelStreamInfer", counts)
    stub.ModelInfer(good_request(), timeout=20)
