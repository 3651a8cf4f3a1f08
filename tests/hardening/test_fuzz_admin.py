"""Property-based fuzzing of the admin API (and Triton's model control) against a live
gateway, with a valid token: the calls a buggy or hostile operator tool would make.

Properties for every call: a documented status class, never INTERNAL or UNKNOWN; a
bounded message; the gateway stays up and keeps serving `digits`; nothing that was
refused leaves a folder or a staged upload behind.
"""

from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infergate.protocol import admin_pb2 as apb
from infergate.protocol import admin_pb2_grpc as apb_grpc
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.protocol import model_config_pb2 as mc
from tests.cli_gateway import CliGateway, digits_with_admin_token
from tests.conftest import DEMO_REPOSITORY
from tests.hardening.test_fuzz_inference import MAX_DETAILS, weird_text

EXAMPLES = max(50, int(os.environ.get("FUZZ_EXAMPLES", "300")) // 3)
TOKEN = "fuzz-admin-token-0123456789abcdef"
METADATA = (("authorization", f"Bearer {TOKEN}"),)
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,  # a model that failed to load, named as such
}
DIGITS_ONNX = (DEMO_REPOSITORY / "digits" / "1" / "model.onnx").read_bytes()

names = st.one_of(st.sampled_from(["digits", "fuzzed", "fuzzed2", "digits.v2"]), weird_text)
versions = st.one_of(st.sampled_from(["", "", "1", "2", "7", "99"]), weird_text)
filenames = st.one_of(st.sampled_from(["model.onnx", "model.tflite", "config.pbtxt"]), weird_text)
payloads = st.one_of(
    st.just(DIGITS_ONNX), st.binary(max_size=300), st.just(b"\x08\x07not a model" * 10)
)
field_paths = st.one_of(
    st.sampled_from(
        [
            "max_batch_size",
            "dynamic_batching",
            "dynamic_batching.max_queue_delay_microseconds",
            "response_cache",
            "response_cache.enable",
            "response_cache_ttl_ms",
            "routing",
            "routing.policy",
            "input",
            "name",
        ]
    ),
    weird_text,
)


@st.composite
def configs(draw: st.DrawFn) -> mc.ModelConfig:
    config = mc.ModelConfig(
        name=draw(st.one_of(st.just(""), names)),
        max_batch_size=draw(st.integers(-(2**31), 2**31 - 1)),
        backend=draw(st.sampled_from(["", "onnxruntime", "nope", "tflite"])),
    )
    if draw(st.booleans()):
        batching = config.dynamic_batching
        batching.max_queue_delay_microseconds = draw(st.integers(0, 2**64 - 1))
        batching.preferred_batch_size.extend(draw(st.lists(st.integers(-5, 2**31 - 1), max_size=3)))
        batching.default_queue_policy.max_queue_size = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        config.routing.policy = draw(
            st.one_of(st.sampled_from(["latency", "fixed", "cost"]), weird_text)
        )
        config.routing.fixed_arm = draw(weird_text)
        config.routing.explore_fraction = draw(st.floats(allow_nan=True, allow_infinity=True))
    if draw(st.booleans()):
        tensor = config.input.add(
            name=draw(st.sampled_from(["x", "y", ""])), data_type=draw(st.integers(0, 20))
        )
        tensor.dims.extend(draw(st.lists(st.integers(-2, 2**40), max_size=4)))
    config.response_cache.enable = draw(st.booleans())
    config.response_cache_ttl_ms = draw(st.integers(0, 2**64 - 1))
    return config


@st.composite
def registrations(draw: st.DrawFn) -> list[apb.RegisterModelRequest]:
    artifacts = draw(st.lists(st.tuples(filenames, payloads), max_size=2))
    header = apb.RegisterModelHeader(name=draw(names), version=draw(versions))
    if draw(st.booleans()):
        header.config.CopyFrom(draw(configs()))
    for filename, data in artifacts:
        lie = draw(st.sampled_from(["none", "none", "sha", "size"]))
        sha = hashlib.sha256(data).hexdigest() if lie != "sha" else draw(st.text(max_size=70))
        size = len(data) if lie != "size" else draw(st.integers(0, 2**64 - 1))
        header.artifacts.add(filename=filename, sha256=sha, size=size)
    messages = [apb.RegisterModelRequest(header=header)]
    if draw(st.booleans()):
        messages.append(apb.RegisterModelRequest(header=header))  # a second header
    for filename, data in artifacts:
        cut = draw(st.integers(0, len(data)))
        chunks = [data[:cut], data[cut:]] if draw(st.booleans()) else [data[:cut]]
        for chunk in chunks:
            target = filename if draw(st.integers(0, 9)) else draw(filenames)
            messages.append(
                apb.RegisterModelRequest(chunk=apb.ArtifactChunk(filename=target, data=chunk))
            )
    return messages


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliGateway]:
    with digits_with_admin_token(tmp_path_factory.mktemp("fuzz-admin"), TOKEN) as gateway:
        yield gateway


def _check(call: object, counts: collections.Counter[str]) -> None:
    try:
        call() if callable(call) else None
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
        counts[code.name] += 1
        assert code in ALLOWED, f"{code.name}: {details[:500]}"
        assert details and len(details) <= MAX_DETAILS, details[:300]
        return
    counts["OK"] += 1


# The suite's 120 s per-test limit fits the short form; `make bench` asks for thousands.
@pytest.mark.timeout(120 + EXAMPLES // 5)
def test_fuzzed_admin_calls(live: CliGateway) -> None:
    counts: collections.Counter[str] = collections.Counter()
    with grpc.insecure_channel(live.url) as channel:
        admin = apb_grpc.ModelAdminStub(channel)
        inference = pb_grpc.GRPCInferenceServiceStub(channel)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            st.one_of(
                registrations().map(lambda m: ("register", m)),
                st.tuples(names, configs(), st.lists(field_paths, max_size=3)).map(
                    lambda t: ("update", t)
                ),
                st.tuples(names, st.booleans()).map(lambda t: ("unregister", t)),
                names.map(lambda n: ("describe", n)),
                st.tuples(
                    names, st.dictionaries(weird_text, st.binary(max_size=50), max_size=2)
                ).map(lambda t: ("triton_load", t)),
            )
        )
        def one(call: tuple[str, object]) -> None:
            kind, args = call
            if kind == "register":
                messages = args
                _check(
                    lambda: admin.RegisterModel(iter(messages), metadata=METADATA, timeout=60),
                    counts,
                )  # type: ignore[arg-type]
            elif kind == "update":
                name, config, paths = args  # type: ignore[misc]
                request = apb.UpdateModelConfigRequest(
                    name=name, config=config, update_mask=field_mask_pb2.FieldMask(paths=paths)
                )
                _check(
                    lambda: admin.UpdateModelConfig(request, metadata=METADATA, timeout=30), counts
                )
            elif kind == "unregister":
                name, keep = args  # type: ignore[misc]
                if name == "digits":
                    return  # it must keep serving, to check the property below
                request = apb.UnregisterModelRequest(name=name, keep_files=keep)
                _check(
                    lambda: admin.UnregisterModel(request, metadata=METADATA, timeout=30), counts
                )
            elif kind == "describe":
                request = apb.DescribeModelRequest(name=args)  # type: ignore[arg-type]
                _check(lambda: admin.DescribeModel(request, metadata=METADATA, timeout=30), counts)
            else:
                name, params = args  # type: ignore[misc]
                request = pb.RepositoryModelLoadRequest(model_name=name)
                for key, data in params.items():
                    request.parameters[key].bytes_param = data
                _check(
                    lambda: inference.RepositoryModelLoad(request, metadata=METADATA, timeout=60),
                    counts,
                )
            assert live.process.poll() is None, "the gateway died:\n" + live.log_text()[-3000:]

        one()
        print(f"\nadmin calls: {dict(counts)}")
        good = pb.ModelInferRequest(model_name="digits")
        good.inputs.add(name="x", datatype="FP32", shape=[1, 64])
        good.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
        try:
            inference.ModelInfer(good, timeout=20)
        except grpc.RpcError as exc:  # keep the gateway's side: pytest's tmp folders go
            log = live.log_text()[-3000:]
            raise AssertionError(f"digits stopped answering: {exc}\n{log}") from exc
        listed = admin.ListModels(apb.ListModelsRequest(), metadata=METADATA, timeout=30)
        assert "digits" in [m.name for m in listed.models]
