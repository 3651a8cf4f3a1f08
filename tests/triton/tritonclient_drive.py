"""Drive a gateway serving tests/triton_models.py's repository with tritonclient, the
way Triton's example client programs do, and print what came back as JSON.

Run in a process of its own (tritonclient's generated protobuf code and infergate's
register the same `inference.*` symbols):

    python tests/triton/tritonclient_drive.py --url 127.0.0.1:8001 --image img.npy \
        [--scenario NAME ...]

Each scenario is one thing a Triton user does (infer sync, async and asyncio,
strings, classification, sequences on one stream or many calls, shared memory, bad
requests); its result is {"ok": value} or {"error": {...}}, so that one failure does
not hide the others. Errors a scenario provokes on purpose are recorded inside its
value as {"status", "message"}. The JSON object goes to stdout, nothing else does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np


def _pkg_resources_shim() -> None:
    """tritonclient 2.41's shared-memory helpers find their C library through
    pkg_resources, which setuptools 81 and later no longer ship: stand in for the one
    call they make (a client-side gap; infergate is not involved)."""
    try:
        import pkg_resources  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        import importlib.resources
        import types

        module = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            return str(importlib.resources.files(package) / name)

        module.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = module


_pkg_resources_shim()

import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]  # noqa: E402
import tritonclient.grpc.aio as aioclient  # type: ignore[import-untyped]  # noqa: E402
import tritonclient.utils.shared_memory as shm  # type: ignore[import-untyped]  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # type: ignore[import-untyped]  # noqa: E402
from tritonclient.utils import (  # type: ignore[import-untyped]  # noqa: E402
    InferenceServerException,
    serialize_byte_tensor,
    serialized_byte_size,
    triton_to_np_dtype,
)

# Values Triton's sequence examples send (the first request of each sequence sends
# its own start value).
SEQUENCE_VALUES = [11, 7, 5, 3, 2, 0, 1]
ACCUMULATOR_IDLE_S = 1.5  # tests/triton_models.py ACCUMULATOR_IDLE_US


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, InferenceServerException):
        return {"status": exc.status(), "message": exc.message()}
    return {"status": None, "message": f"{type(exc).__name__}: {exc}"}


def _expect_error(call: Callable[[], Any]) -> dict[str, Any]:
    """Run a call that must fail: its status and message (or what it returned)."""
    try:
        result = call()
    except InferenceServerException as exc:
        return _error(exc)
    return {"status": None, "message": f"no error; returned {type(result).__name__}"}


def _io(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _pair(n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a = np.tile(np.arange(16, dtype=np.int32), (n, 1))
    return a, np.ones((n, 16), dtype=np.int32)


# ---- plain inference ------------------------------------------------------------


def simple(client: Any, url: str) -> dict[str, Any]:
    a, b = _pair(2)
    outputs = [
        grpcclient.InferRequestedOutput("OUTPUT0"),
        grpcclient.InferRequestedOutput("OUTPUT1"),
    ]
    sync = client.infer(
        "simple", [_io("INPUT0", a, "INT32"), _io("INPUT1", b, "INT32")], outputs=outputs
    )
    answers: queue.Queue[Any] = queue.Queue()
    client.async_infer(
        "simple",
        [_io("INPUT0", a, "INT32"), _io("INPUT1", b, "INT32")],
        lambda result, error: answers.put(error or result),
        outputs=outputs,
    )
    later = answers.get(timeout=30)
    if isinstance(later, Exception):
        raise later

    async def with_aio() -> Any:
        async with aioclient.InferenceServerClient(url) as aio:
            inputs = [
                aioclient.InferInput("INPUT0", [2, 16], "INT32"),
                aioclient.InferInput("INPUT1", [2, 16], "INT32"),
            ]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(b)
            return await aio.infer("simple", inputs)

    from_aio = asyncio.run(with_aio())
    return {
        kind: {"sum": r.as_numpy("OUTPUT0").tolist(), "diff": r.as_numpy("OUTPUT1").tolist()}
        for kind, r in (("sync", sync), ("async", later), ("aio", from_aio))
    }


def int8_explicit(client: Any, url: str) -> dict[str, Any]:
    """INT8 sent as typed int_contents through the raw stub, as Triton's explicit
    content example does."""
    import grpc

    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="simple_int8")
        for name, values in (("INPUT0", list(range(16))), ("INPUT1", [-1] * 16)):
            tensor = request.inputs.add(name=name, datatype="INT8", shape=[1, 16])
            tensor.contents.int_contents.extend(values)
        response = stub.ModelInfer(request)
    return {
        o.name: np.frombuffer(raw, np.int8).tolist()
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def strings(client: Any, url: str) -> dict[str, Any]:
    a = np.array([[str(i) for i in range(16)]], dtype=object)
    b = np.array([["1"] * 16], dtype=object)
    result = client.infer("simple_string", [_io("INPUT0", a, "BYTES"), _io("INPUT1", b, "BYTES")])
    texts = ["", "infergate", "ünïcødé ✓", "x" * 1000]
    identity = client.infer(
        "simple_identity", [_io("INPUT0", np.array([texts], dtype=object), "BYTES")]
    )
    return {
        "sum": [x.decode() for x in result.as_numpy("OUTPUT0").reshape(-1)],
        "diff": [x.decode() for x in result.as_numpy("OUTPUT1").reshape(-1)],
        "identity": [x.decode() for x in identity.as_numpy("OUTPUT0").reshape(-1)],
        "identity_shape": list(identity.as_numpy("OUTPUT0").shape),
    }


def classification(client: Any, url: str, image: np.ndarray) -> dict[str, Any]:
    top = client.infer(
        "densenet_onnx",
        [_io("data_0", image, "FP32")],
        outputs=[grpcclient.InferRequestedOutput("fc6_1", class_count=3)],
    )
    a, b = _pair(2)
    b[1] = 5
    batched = client.infer(
        "simple",
        [_io("INPUT0", a, "INT32"), _io("INPUT1", b, "INT32")],
        outputs=[
            grpcclient.InferRequestedOutput("OUTPUT0", class_count=2),
            grpcclient.InferRequestedOutput("OUTPUT1"),
        ],
    )
    too_many = _expect_error(
        lambda: client.infer(
            "densenet_onnx",
            [_io("data_0", image, "FP32")],
            outputs=[grpcclient.InferRequestedOutput("fc6_1", class_count=1001)],
        )
    )
    after = client.infer("densenet_onnx", [_io("data_0", image, "FP32")])
    return {
        "top3": [x.decode() for x in top.as_numpy("fc6_1").reshape(-1)],
        "top3_shape": list(top.as_numpy("fc6_1").shape),
        "batched": [[x.decode() for x in row] for row in batched.as_numpy("OUTPUT0")],
        "batched_other": batched.as_numpy("OUTPUT1").tolist(),
        "too_many": too_many,
        "scores_after": after.as_numpy("fc6_1").tolist(),
    }


# ---- sequences --------------------------------------------------------------------


def _step_inputs(value: int, module: Any = grpcclient) -> list[Any]:
    data = np.full((1, 1), value, dtype=np.int32)
    tensor = module.InferInput("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(data)
    return [tensor]


def _sync_sequence(client: Any, model: str, sequence_id: int | str, values: list[int]) -> list[int]:
    outputs = []
    for i, value in enumerate(values):
        result = client.infer(
            model,
            _step_inputs(value),
            sequence_id=sequence_id,
            sequence_start=i == 0,
            sequence_end=i == len(values) - 1,
        )
        outputs.append(int(result.as_numpy("OUTPUT")[0][0]))
    return outputs


def sequence_sync(client: Any, url: str) -> dict[str, Any]:
    """What simple_grpc_sequence_sync_infer_client does, both models."""
    string_id = str(uuid.uuid4())
    return {
        "simple": [
            _sync_sequence(client, "simple_sequence", 1000, [0, *SEQUENCE_VALUES]),
            _sync_sequence(client, "simple_sequence", 1001, [100, *(-v for v in SEQUENCE_VALUES)]),
            _sync_sequence(
                client, "simple_sequence", string_id, [20, *(-v for v in SEQUENCE_VALUES)]
            ),
        ],
        "dyna": [
            _sync_sequence(client, "simple_dyna_sequence", 1000, [0, *SEQUENCE_VALUES]),
            _sync_sequence(
                client, "simple_dyna_sequence", 1001, [100, *(-v for v in SEQUENCE_VALUES)]
            ),
            _sync_sequence(
                client, "simple_string_dyna_sequence", "1002", [20, *(-v for v in SEQUENCE_VALUES)]
            ),
        ],
    }


def sequence_stream(client: Any, url: str) -> dict[str, Any]:
    """Three sequences interleaved on one stream (two integer IDs on
    simple_dyna_sequence, a string ID on simple_sequence), answers collected by
    request id: each sequence's steps in its order."""
    answers: queue.Queue[Any] = queue.Queue()
    plans: dict[int | str, tuple[str, list[int]]] = {
        2000: ("simple_dyna_sequence", [0, *SEQUENCE_VALUES]),
        2001: ("simple_dyna_sequence", [100, *(-v for v in SEQUENCE_VALUES)]),
        "stream-" + uuid.uuid4().hex: ("simple_sequence", [20, *SEQUENCE_VALUES]),
    }
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = 0
    try:
        for step in range(len(SEQUENCE_VALUES) + 1):
            for sequence_id, (model, values) in plans.items():
                client.async_stream_infer(
                    model,
                    _step_inputs(values[step]),
                    request_id=f"{sequence_id}_{step}",
                    sequence_id=sequence_id,
                    sequence_start=step == 0,
                    sequence_end=step == len(values) - 1,
                )
                sent += 1
        results: dict[str, int] = {}
        errors = []
        for _ in range(sent):
            result, error = answers.get(timeout=30)
            if error is not None:
                errors.append(_error(error))
            else:
                results[result.get_response().id] = int(result.as_numpy("OUTPUT")[0][0])
    finally:
        client.stop_stream()
    return {"results": results, "errors": errors, "ids": [str(k) for k in plans]}


def sequence_aio(client: Any, url: str) -> dict[str, Any]:
    """The asyncio client's stream: two accumulator sequences, interleaved."""
    plans = {3000: [5, 11, 7, 2], 3001: [1, 2, 3, 4]}

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for step in range(4):
            for sequence_id, values in plans.items():
                yield {
                    "model_name": "simple_accumulator",
                    "inputs": _step_inputs(values[step], aioclient),
                    "request_id": f"{sequence_id}_{step}",
                    "sequence_id": sequence_id,
                    "sequence_start": step == 0,
                    "sequence_end": step == 3,
                }

    async def run() -> dict[str, Any]:
        results: dict[str, int] = {}
        errors = []
        async with aioclient.InferenceServerClient(url) as aio:
            stream = aio.stream_infer(requests())
            async for result, error in stream:
                if error is not None:
                    errors.append(_error(error))
                else:
                    results[result.get_response().id] = int(result.as_numpy("OUTPUT")[0][0])
                if len(results) + len(errors) == 8:
                    break
        return {"results": results, "errors": errors}

    return asyncio.run(run())


def accumulator(client: Any, url: str) -> dict[str, Any]:
    """Implicit state: running sums; a new start resets; a string ID works too."""
    first = _sync_sequence(client, "simple_accumulator", 4000, [5, 11, 7, 2])
    again = _sync_sequence(client, "simple_accumulator", 4000, [1, 1])
    named = _sync_sequence(client, "simple_accumulator", "acc-" + uuid.uuid4().hex, [3, 4])
    return {"first": first, "again": again, "named": named}


def sequence_errors(client: Any, url: str) -> dict[str, Any]:
    """Each bad sequence request gets its own status; a sequence running beside them
    is not disturbed."""

    def step(value: int, sequence_id: Any, start: bool = False, end: bool = False) -> int:
        result = client.infer(
            "simple_accumulator",
            _step_inputs(value),
            sequence_id=sequence_id,
            sequence_start=start,
            sequence_end=end,
        )
        return int(result.as_numpy("OUTPUT")[0][0])

    sums = [step(10, 5000, start=True)]
    errors = {
        "reused_id": _expect_error(lambda: step(1, 5000, start=True)),
        "no_start": _expect_error(lambda: step(1, 5999)),
        "no_sequence_id": _expect_error(
            lambda: client.infer("simple_accumulator", _step_inputs(1))
        ),
        "two_rows": _expect_error(
            lambda: client.infer(
                "simple_accumulator",
                [_io("INPUT", np.ones((2, 1), np.int32), "INT32")],
                sequence_id=5001,
                sequence_start=True,
            )
        ),
        "control_sent": _expect_error(
            lambda: client.infer(
                "simple_accumulator",
                [*_step_inputs(1), _io("START", np.ones((1, 1), np.int32), "INT32")],
                sequence_id=5002,
                sequence_start=True,
            )
        ),
    }
    errors["string_id_for_uint64_corrid"] = _expect_error(
        lambda: client.infer(
            "simple_dyna_sequence", _step_inputs(1), sequence_id="abc", sequence_start=True
        )
    )
    sums.append(step(5, 5000))
    sums.append(step(1, 5000, end=True))
    errors["after_end"] = _expect_error(lambda: step(1, 5000))
    return {"sums": sums, "errors": errors}


def sequence_idle(client: Any, url: str) -> dict[str, Any]:
    started = client.infer(
        "simple_accumulator", _step_inputs(4), sequence_id=6000, sequence_start=True
    )  # and no end
    before = [int(started.as_numpy("OUTPUT")[0][0])]
    time.sleep(ACCUMULATOR_IDLE_S + 1.0)
    dropped = _expect_error(
        lambda: client.infer("simple_accumulator", _step_inputs(1), sequence_id=6000)
    )
    restarted = _sync_sequence(client, "simple_accumulator", 6000, [2, 3])
    return {"before": before, "dropped": dropped, "restarted": restarted}


# ---- shared memory ------------------------------------------------------------------


def shared_memory(client: Any, url: str) -> dict[str, Any]:
    """What simple_grpc_shm_client does: inputs and outputs in system shared memory."""
    tag = f"{os.getpid()}"
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()
    a, b = _pair(1)
    size = a.nbytes
    out_handle = shm.create_shared_memory_region("output_data", f"/output_simple_{tag}", size * 2)
    in_handle = shm.create_shared_memory_region("input_data", f"/input_simple_{tag}", size * 2)
    try:
        client.register_system_shared_memory("output_data", f"/output_simple_{tag}", size * 2)
        shm.set_shared_memory_region(in_handle, [a])
        shm.set_shared_memory_region(in_handle, [b], offset=size)
        client.register_system_shared_memory("input_data", f"/input_simple_{tag}", size * 2)
        inputs = [
            grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
            grpcclient.InferInput("INPUT1", [1, 16], "INT32"),
        ]
        inputs[0].set_shared_memory("input_data", size)
        inputs[1].set_shared_memory("input_data", size, offset=size)
        outputs = [
            grpcclient.InferRequestedOutput("OUTPUT0"),
            grpcclient.InferRequestedOutput("OUTPUT1"),
        ]
        outputs[0].set_shared_memory("output_data", size)
        outputs[1].set_shared_memory("output_data", size, offset=size)
        result = client.infer("simple", inputs, outputs=outputs)
        response = result.get_response()
        o0, o1 = result.get_output("OUTPUT0"), result.get_output("OUTPUT1")
        # Views of the client's mapping: copied out before it is destroyed.
        sums = shm.get_contents_as_numpy(
            out_handle, triton_to_np_dtype(o0.datatype), o0.shape
        ).tolist()
        diffs = shm.get_contents_as_numpy(
            out_handle, triton_to_np_dtype(o1.datatype), o1.shape, offset=size
        ).tolist()
        # One output in shared memory, the other in the response: entries line up.
        mixed = client.infer(
            "simple", inputs, outputs=[outputs[0], grpcclient.InferRequestedOutput("OUTPUT1")]
        )
        status = client.get_system_shared_memory_status(as_json=True)
        one = client.get_system_shared_memory_status("input_data", as_json=True)
        client.unregister_system_shared_memory("input_data")
        after_one = client.get_system_shared_memory_status(as_json=True)
        client.unregister_system_shared_memory()
        after_all = client.get_system_shared_memory_status(as_json=True)
        gone = _expect_error(lambda: client.infer("simple", inputs))
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)
    return {
        "sum": sums,
        "diff": diffs,
        "raw_entries": [len(raw) for raw in response.raw_output_contents],
        "mixed_raw_entries": [len(raw) for raw in mixed.get_response().raw_output_contents],
        "mixed_diff": mixed.as_numpy("OUTPUT1").tolist(),
        "status": status,
        "one": one,
        "after_one": after_one,
        "after_all": after_all,
        "gone": gone,
    }


def shared_memory_strings(client: Any, url: str) -> dict[str, Any]:
    """What simple_grpc_shm_string_client does: BYTES tensors in shared memory."""
    tag = f"{os.getpid()}"
    a = np.array([[str(i) for i in range(16)]], dtype=object)
    b = np.array([["1"] * 16], dtype=object)
    sa, sb = serialize_byte_tensor(a), serialize_byte_tensor(b)
    size_a, size_b = serialized_byte_size(sa), serialized_byte_size(sb)
    in_size = size_a + size_b
    out_size = 1024
    in_handle = shm.create_shared_memory_region("s_in", f"/s_in_{tag}", in_size)
    out_handle = shm.create_shared_memory_region("s_out", f"/s_out_{tag}", out_size * 2)
    try:
        shm.set_shared_memory_region(in_handle, [sa])
        shm.set_shared_memory_region(in_handle, [sb], offset=size_a)
        client.register_system_shared_memory("s_in", f"/s_in_{tag}", in_size)
        client.register_system_shared_memory("s_out", f"/s_out_{tag}", out_size * 2)
        inputs = [
            grpcclient.InferInput("INPUT0", [1, 16], "BYTES"),
            grpcclient.InferInput("INPUT1", [1, 16], "BYTES"),
        ]
        inputs[0].set_shared_memory("s_in", size_a)
        inputs[1].set_shared_memory("s_in", size_b, offset=size_a)
        outputs = [
            grpcclient.InferRequestedOutput("OUTPUT0"),
            grpcclient.InferRequestedOutput("OUTPUT1"),
        ]
        outputs[0].set_shared_memory("s_out", out_size)
        outputs[1].set_shared_memory("s_out", out_size, offset=out_size)
        result = client.infer("simple_string", inputs, outputs=outputs)
        o0, o1 = result.get_output("OUTPUT0"), result.get_output("OUTPUT1")
        sums = [
            x.decode()
            for x in shm.get_contents_as_numpy(out_handle, np.object_, o0.shape).reshape(-1)
        ]
        diffs = [
            x.decode()
            for x in shm.get_contents_as_numpy(
                out_handle, np.object_, o1.shape, offset=out_size
            ).reshape(-1)
        ]
        client.unregister_system_shared_memory("s_in")
        client.unregister_system_shared_memory("s_out")
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)
    return {"sum": sums, "diff": diffs}


def shared_memory_errors(client: Any, url: str) -> dict[str, Any]:
    """Bad regions, offsets and sizes: each refused with its status; the region and
    the gateway keep working."""
    tag = f"{os.getpid()}"
    a, b = _pair(1)
    size = a.nbytes
    handle = shm.create_shared_memory_region("bad_in", f"/bad_in_{tag}", size * 2)
    shm.set_shared_memory_region(handle, [a])
    shm.set_shared_memory_region(handle, [b], offset=size)

    def infer(
        region: str, byte_size: int, offset: int, out: tuple[str, int, int] | None = None
    ) -> Any:
        inputs = [
            grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
            grpcclient.InferInput("INPUT1", [1, 16], "INT32"),
        ]
        inputs[0].set_shared_memory(region, byte_size, offset=offset)
        inputs[1].set_shared_memory("bad_in", size, offset=size)
        outputs = None
        if out is not None:
            outputs = [grpcclient.InferRequestedOutput("OUTPUT0")]
            outputs[0].set_shared_memory(*out[:2], offset=out[2])
        return client.infer("simple", inputs, outputs=outputs)

    try:
        client.register_system_shared_memory("bad_in", f"/bad_in_{tag}", size * 2)
        errors = {
            "register_unknown_key": _expect_error(
                lambda: client.register_system_shared_memory("nokey", f"/no_such_{tag}", 16)
            ),
            "register_past_end": _expect_error(
                lambda: client.register_system_shared_memory("big", f"/bad_in_{tag}", size * 3)
            ),
            "register_offset_past_end": _expect_error(
                lambda: client.register_system_shared_memory(
                    "far", f"/bad_in_{tag}", 8, offset=size * 2
                )
            ),
            "register_twice": _expect_error(
                lambda: client.register_system_shared_memory("bad_in", f"/bad_in_{tag}", 8)
            ),
            "register_path_key": _expect_error(
                lambda: client.register_system_shared_memory("path", "/../../etc/passwd", 8)
            ),
            "unknown_region": _expect_error(lambda: infer("no_region", size, 0)),
            "offset_past_end": _expect_error(lambda: infer("bad_in", size, size * 2)),
            "window_past_end": _expect_error(lambda: infer("bad_in", size, size + 4)),
            "size_too_small": _expect_error(lambda: infer("bad_in", size - 4, 0)),
            "output_region_too_small": _expect_error(
                lambda: infer("bad_in", size, 0, ("bad_in", 8, 0))
            ),
            "status_unknown": _expect_error(
                lambda: client.get_system_shared_memory_status("no_region")
            ),
        }
        good = infer("bad_in", size, 0).as_numpy("OUTPUT0").tolist()
        status = client.get_system_shared_memory_status(as_json=True)
        client.unregister_system_shared_memory("bad_in")
        client.unregister_system_shared_memory("never_registered")  # no error, as Triton
    finally:
        shm.destroy_shared_memory_region(handle)
    return {"errors": errors, "good_sum": good, "status": status}


def cuda_shared_memory(client: Any, url: str) -> dict[str, Any]:
    return {
        "register": _expect_error(
            lambda: client.register_cuda_shared_memory("gpu", b"\0" * 64, 0, 64)
        ),
        "status": client.get_cuda_shared_memory_status(as_json=True),
        "status_named": _expect_error(lambda: client.get_cuda_shared_memory_status("gpu")),
        "unregister": client.unregister_cuda_shared_memory() is None,
    }


def metadata(client: Any, url: str) -> dict[str, Any]:
    return {
        "server": client.get_server_metadata(as_json=True),
        "sequence_model": client.get_model_metadata("simple_sequence", as_json=True),
        "sequence_config": client.get_model_config("simple_dyna_sequence", as_json=True),
        "classifier": client.get_model_metadata("densenet_onnx", as_json=True),
        "unknown_model": _expect_error(lambda: client.get_model_metadata("no_such_model")),
        "unknown_infer": _expect_error(lambda: client.infer("no_such_model", _step_inputs(1))),
        "bad_version": _expect_error(lambda: client.get_model_metadata("simple", "latest")),
        "missing_version": _expect_error(lambda: client.get_model_metadata("simple", "7")),
    }


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "simple": simple,
    "int8_explicit": int8_explicit,
    "strings": strings,
    "classification": classification,
    "sequence_sync": sequence_sync,
    "sequence_stream": sequence_stream,
    "sequence_aio": sequence_aio,
    "accumulator": accumulator,
    "sequence_errors": sequence_errors,
    "sequence_idle": sequence_idle,
    "shared_memory": shared_memory,
    "shared_memory_strings": shared_memory_strings,
    "shared_memory_errors": shared_memory_errors,
    "cuda_shared_memory": cuda_shared_memory,
    "metadata": metadata,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", required=True, help="gateway address host:port")
    parser.add_argument("--image", required=True, help=".npy file, FP32 [3, 224, 224]")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    image = np.load(args.image, allow_pickle=False)
    results: dict[str, Any] = {}
    with grpcclient.InferenceServerClient(url=args.url) as client:
        for name in args.scenario or SCENARIOS:
            scenario = SCENARIOS[name]
            try:
                if name == "classification":
                    value = scenario(client, args.url, image)
                else:
                    value = scenario(client, args.url)
                results[name] = {"ok": value}
            except Exception as exc:
                results[name] = {"error": _error(exc)}
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
