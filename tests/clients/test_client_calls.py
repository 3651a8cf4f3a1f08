"""Every public call of both faces of the client, against a real gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from infergate.clients import (
    AsyncClient,
    Client,
    InferRequest,
    ModelNotFound,
    StreamError,
    StreamResult,
    batching,
)
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import inference_pb2 as pb
from tests.clients.conftest import DIGITS_ONNX, Face, Served

rng = np.random.default_rng(7)


def digits_reference(x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(DIGITS_ONNX), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


async def test_readiness_metadata_and_statistics(client: Face) -> None:
    assert await client("is_server_live") is True
    assert await client("is_server_ready") is True
    assert await client("is_model_ready", "digits") is True
    assert await client("is_model_ready", "no_such_model") is False
    server = await client("server_metadata")
    assert server.name == "infergate" and "statistics" in server.extensions
    metadata = await client("model_metadata", "digits")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP32", [-1, 64])
    ]
    config = await client("model_config", "digits", timeout_s=5.0)
    assert config.config.max_batch_size == 64
    index = await client("repository_index", ready=True)
    assert {"digits", "id_bytes", "slow"} <= {m.name for m in index}

    await client("infer", "digits", {"x": np.zeros((3, 64), np.float32)})
    stats = await client("model_statistics", "digits")
    assert [s.name for s in stats.model_stats] == ["digits"]
    assert stats.model_stats[0].inference_count >= 3


async def test_infer_sends_numpy_and_returns_numpy(client: Face) -> None:
    x = rng.standard_normal((4, 64)).astype(np.float32)
    outputs = await client(
        "infer",
        "digits",
        {"x": x},
        outputs=["y"],
        request_id="call-1",
        parameters={"note": "any", "flag": True},
        timeout_s=10.0,
    )
    assert list(outputs) == ["y"]
    np.testing.assert_allclose(outputs["y"], digits_reference(x), rtol=1e-5, atol=1e-5)


def _requests() -> list[InferRequest]:
    requests = [
        InferRequest("digits", {"x": rng.standard_normal((n, 64)).astype(np.float32)}, id=rid)
        for n, rid in ((1, "first"), (2, ""), (3, "third"), (1, ""))
    ]
    failing = InferRequest("no_such_model", {"x": np.zeros((1, 64), np.float32)}, id="bad")
    return [*requests[:2], failing, *requests[2:]]


def _check_answers(requests: list[InferRequest], answers: list[StreamResult]) -> None:
    assert len(answers) == len(requests)
    # Each answer carries the very request it answers, matched by id.
    assert sorted(map(id, (a.request for a in answers))) == sorted(map(id, requests))
    assert len({a.id for a in answers}) == len(answers)
    for answer in answers:
        if answer.request.model == "no_such_model":
            assert not answer.ok and answer.id == "bad"
            assert isinstance(answer.error, StreamError)
            assert "no_such_model" in answer.error.message
            with pytest.raises(StreamError):
                answer.result()
            continue
        assert answer.ok and (answer.request.id == "" or answer.id == answer.request.id)
        x = answer.request.inputs["x"]
        assert isinstance(x, np.ndarray)
        np.testing.assert_allclose(answer.result()["y"], digits_reference(x), atol=1e-5)


async def test_stream_infer_answers_each_request_by_id(served: Served) -> None:
    requests = _requests()
    with Client(served.address) as client:
        answers = await asyncio.to_thread(lambda: list(client.stream_infer(requests)))
    _check_answers(requests, answers)

    async def fed() -> AsyncIterator[InferRequest]:
        for request in requests:
            await asyncio.sleep(0)
            yield request

    async with AsyncClient(served.address) as aclient:
        for source in (requests, fed()):
            answers = [answer async for answer in aclient.stream_infer(source, timeout_s=30)]
            _check_answers(requests, answers)


async def test_a_stream_request_that_cannot_be_built_is_raised_after_the_answers(
    served: Served,
) -> None:
    x = {"x": np.zeros((1, 64), np.float32)}
    requests = [
        InferRequest("digits", x, id="a"),
        InferRequest("digits", {"x": np.zeros(1, np.complex64)}, id="b"),  # no datatype
        InferRequest("digits", x, id="c"),
    ]
    async with AsyncClient(served.address) as client:
        seen: list[str] = []
        with pytest.raises(ValueError, match="complex64"):
            async for answer in client.stream_infer(requests):
                seen.append(answer.id)
    assert seen == ["a"]

    def read_blocking() -> tuple[list[str], Exception | None]:
        ids: list[str] = []
        with Client(served.address) as sync_client:
            try:
                for answer in sync_client.stream_infer(requests):
                    ids.append(answer.id)
            except ValueError as exc:
                return ids, exc
        return ids, None

    ids, error = await asyncio.to_thread(read_blocking)
    assert ids == ["a"] and "complex64" in str(error)


async def test_stream_infer_refuses_an_id_already_waiting(served: Served) -> None:
    x = {"x": np.zeros((1, 64), np.float32)}
    twice = [InferRequest("slow", {"x": np.zeros((1, 4), np.float32)}, id="same")] * 2
    async with AsyncClient(served.address) as client:
        with pytest.raises(ValueError, match="'same' is already waiting"):
            async for _ in client.stream_infer(twice):
                pass
        # One made up for a request without an id never takes a caller's.
        requests = [InferRequest("digits", x, id="stream-1"), InferRequest("digits", x)]
        answers = [a async for a in client.stream_infer(requests)]
    assert sorted(a.id for a in answers) == ["stream-1", "stream-2"]


async def test_admin_register_update_describe_list_unregister(admin: Face, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    registered = await admin(
        "register", "mnist", {"model.onnx": DIGITS_ONNX}, progress=lambda *a: seen.append(a)
    )
    assert (registered.name, registered.version) == ("mnist", "1")
    size = DIGITS_ONNX.stat().st_size
    assert seen[0] == ("model.onnx", 0, size) and seen[-1] == ("model.onnx", size, size)

    assert "mnist" in {m.name for m in await admin("list_models")}
    config = await admin("update", "mnist", batching(max_queue_delay_us=1500, cache=True))
    assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    assert config.response_cache.enable
    described = await admin("describe", "mnist")
    assert described.serving_version == "1" and described.state == "READY"
    assert [a.filename for a in described.versions[0].artifacts] == ["model.onnx"]

    # A second version: config, version and progress by position, a path as a str.
    second = await admin("register", "mnist", {"model.onnx": str(DIGITS_ONNX)}, None, "", None)
    assert second.version == "2" and list(second.replaced_versions) == ["1"]

    removed = await admin("unregister", "mnist")
    assert list(removed.versions) == ["2"] and removed.files_removed
    assert "mnist" not in {m.name for m in await admin("list_models")}
    with pytest.raises(ModelNotFound):
        await admin("describe", "mnist")


async def test_register_draws_a_progress_bar_on_stderr(
    admin: Face, capsys: pytest.CaptureFixture[str]
) -> None:
    await admin("register", "bar", {"model.onnx": DIGITS_ONNX}, progress=True)
    assert "uploading model.onnx" in capsys.readouterr().err


async def test_any_method_can_be_called_by_name(client: Face, admin: Face) -> None:
    live = await client("call", "ServerLive", pb.ServerLiveRequest())
    assert live.live
    listed = await admin("call", "ListModels", apb.ListModelsRequest(), repeatable=True)
    assert "digits" in {m.name for m in listed.models}


def test_methods_show_their_calls_parameters() -> None:
    import inspect

    signature = inspect.signature(Client.infer)
    assert list(signature.parameters)[:3] == ["self", "model", "inputs"]
    assert signature.return_annotation == "Outputs"
    assert "Run the model" in (Client.infer.__doc__ or "")
    assert inspect.iscoroutinefunction(AsyncClient.infer)
