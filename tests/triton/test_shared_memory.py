"""The shared-memory region registry (infergate.gateway.shared_memory) and the
conversion of tensors placed in regions (infergate.gateway.convert), in process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from infergate.gateway import convert
from infergate.gateway.core.request import InferResult, OutputTensor
from infergate.gateway.servicers.inference import require_local_peer
from infergate.gateway.shared_memory import RegionNotFound, SharedMemoryRegistry
from infergate.protocol import inference_pb2 as pb
from infergate.schema.errors import AlreadyExists, InvalidInput, PermissionDenied, QueueFull
from infergate.schema.tensors import ModelSpec, TensorSpec

SPEC = ModelSpec(
    inputs=(TensorSpec("a", "FP32", (-1, 4)), TensorSpec("b", "FP32", (-1, 4))),
    outputs=(TensorSpec("y", "FP32", (-1, 4)),),
    max_batch_size=8,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder standing in for /dev/shm (the registry's root is a parameter)."""
    return tmp_path


@pytest.fixture
def registry(root: Path) -> Iterator[SharedMemoryRegistry]:
    shm = SharedMemoryRegistry(root)
    yield shm
    shm.close()


def make_object(root: Path, name: str, size: int) -> Path:
    path = root / name
    path.write_bytes(bytes(size))
    return path


def test_register_view_write_status_unregister(root: Path, registry: SharedMemoryRegistry) -> None:
    path = make_object(root, "obj", 10000)
    registry.register("r", "/obj", 5000, 64)  # an offset off any page boundary
    region = registry.get("r")
    data = np.arange(16, dtype=np.float32)
    region.write(0, 64, "y", "FP32", data)
    assert path.read_bytes()[5000:5064] == data.tobytes()
    view = np.frombuffer(region.view(0, 64, "x"), np.float32)
    np.testing.assert_array_equal(view, data)
    assert not view.flags.writeable
    del view
    (status,) = registry.status("r")
    assert (status.name, status.key, status.offset, status.byte_size) == ("r", "/obj", 5000, 64)
    registry.unregister("r")
    assert registry.status() == []
    with pytest.raises(RegionNotFound, match="Unable to find shared memory region: 'r'"):
        registry.get("r")


def test_bad_registrations(root: Path, registry: SharedMemoryRegistry) -> None:
    make_object(root, "obj", 100)
    (root / "dir").mkdir()
    os.symlink(root / "obj", root / "link")
    with pytest.raises(RegionNotFound, match="Unable to open"):
        registry.register("r", "/missing", 0, 10)
    with pytest.raises(InvalidInput, match="invalid args"):
        registry.register("r", "/obj", 0, 101)
    with pytest.raises(InvalidInput, match="invalid args"):
        registry.register("r", "/obj", 100, 1)
    with pytest.raises(InvalidInput, match="invalid args"):
        registry.register("r", "/obj", 0, 0)
    for key in ("/../obj", "/a/b", "", "/", "/..", "/x\x00"):
        with pytest.raises(InvalidInput, match="not a POSIX shared-memory name"):
            registry.register("r", key, 0, 10)
    with pytest.raises(InvalidInput):
        registry.register("r", "/link", 0, 10)  # O_NOFOLLOW
    with pytest.raises(InvalidInput):
        registry.register("r", "/dir", 0, 10)
    with pytest.raises(InvalidInput, match="needs a name"):
        registry.register("", "/obj", 0, 10)
    registry.register("r", "obj", 0, 10)  # without the leading slash, as shm_open allows
    with pytest.raises(AlreadyExists, match="already in manager"):
        registry.register("r", "/obj", 0, 10)
    assert [r.name for r in registry.status()] == ["r"]


def test_tensor_bounds_are_checked(root: Path, registry: SharedMemoryRegistry) -> None:
    make_object(root, "obj", 100)
    registry.register("r", "/obj", 0, 100)
    region = registry.get("r")
    with pytest.raises(InvalidInput, match="Invalid offset for shared memory region"):
        region.view(100, 1, "x")
    with pytest.raises(InvalidInput, match="Invalid offset"):
        region.view(-1, 1, "x")
    with pytest.raises(InvalidInput, match="Invalid offset \\+ byte size"):
        region.view(50, 51, "x")
    with pytest.raises(InvalidInput, match="should be at least 128 bytes"):
        region.write(0, 100, "y", "FP32", np.zeros(32, np.float32))


def test_a_truncated_object_is_refused_not_read(root: Path, registry: SharedMemoryRegistry) -> None:
    path = make_object(root, "obj", 8192)
    registry.register("r", "/obj", 4096, 4096)
    os.truncate(path, 100)  # reading the mapping now would be SIGBUS
    with pytest.raises(InvalidInput, match="shrank"):
        registry.get("r").view(0, 16, "x")


def test_a_region_in_use_is_unmapped_when_its_last_view_goes(
    root: Path, registry: SharedMemoryRegistry
) -> None:
    make_object(root, "obj", 64)
    registry.register("r", "/obj", 0, 64)
    view = np.frombuffer(registry.get("r").view(0, 64, "x"), np.uint8)
    registry.unregister("r")  # a request still reads it
    assert view.sum() == 0  # still mapped
    assert len(registry._retired) == 1
    del view
    registry.status()  # any later call sweeps
    assert registry._retired == []


def test_regions_are_bounded(root: Path) -> None:
    make_object(root, "obj", 64)
    registry = SharedMemoryRegistry(root, max_regions=2)
    registry.register("a", "/obj", 0, 8)
    registry.register("b", "/obj", 8, 8)
    with pytest.raises(QueueFull):
        registry.register("c", "/obj", 16, 8)
    registry.unregister()
    assert len(registry) == 0
    registry.close()


def test_only_a_local_peer_registers() -> None:
    for peer in (
        "ipv4:127.0.0.1:5000",
        "ipv6:[::1]:5000",
        "unix:/tmp/s",
        "ipv6:[::ffff:127.0.0.1]:1",
    ):
        require_local_peer(peer, "system shared memory")
    for peer in ("ipv4:10.0.0.2:5000", "ipv6:[2001:db8::1]:1", "ipv4:128.0.0.1:1"):
        with pytest.raises(PermissionDenied, match="gateway's machine"):
            require_local_peer(peer, "system shared memory")


# ---- convert: tensors in regions ---------------------------------------------------------


def request_in(registry: SharedMemoryRegistry, root: Path) -> pb.ModelInferRequest:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    (root / "in").write_bytes(a.tobytes() + bytes(64))
    registry.register("in", "/in", 0, 96)
    message = pb.ModelInferRequest(model_name="m")
    shm_input = message.inputs.add(name="a", datatype="FP32", shape=[2, 4])
    shm_input.parameters["shared_memory_region"].string_param = "in"
    shm_input.parameters["shared_memory_byte_size"].int64_param = 32
    raw_input = message.inputs.add(name="b", datatype="FP32", shape=[2, 4])
    message.raw_input_contents.append(np.ones((2, 4), np.float32).tobytes())  # b only
    del raw_input
    return message


def test_inputs_in_regions_are_views_and_raw_entries_skip_them(
    root: Path, registry: SharedMemoryRegistry
) -> None:
    message = request_in(registry, root)
    request = convert.decode_request(message, SPEC, registry)
    a, b = (t.data for t in request.inputs)
    np.testing.assert_array_equal(a, np.arange(8, dtype=np.float32).reshape(2, 4))
    np.testing.assert_array_equal(b, np.ones((2, 4)))
    assert not a.flags.owndata  # read in place
    (root / "in").write_bytes(np.full(8, 7, np.float32).tobytes() + bytes(64))
    assert a[0, 0] == 7  # the same bytes the client writes


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            lambda p: p["shared_memory_byte_size"].ClearField("int64_param"),
            InvalidInput,
            "expected int64_param",
        ),
        (lambda p: p.pop("shared_memory_byte_size"), InvalidInput, "must be specified along"),
        (
            lambda p: p["shared_memory_region"].__setattr__("string_param", "nope"),
            RegionNotFound,
            "nope",
        ),
        (
            lambda p: p["shared_memory_offset"].__setattr__("int64_param", 96),
            InvalidInput,
            "Invalid offset",
        ),
        (
            lambda p: p["shared_memory_offset"].__setattr__("int64_param", 80),
            InvalidInput,
            "byte size",
        ),
        (
            lambda p: p["shared_memory_byte_size"].__setattr__("int64_param", 28),
            InvalidInput,
            "needs 32",
        ),
        (
            lambda p: p["shared_memory_region"].__setattr__("int64_param", 1),
            InvalidInput,
            "string_param",
        ),
    ],
)
def test_bad_tensor_parameters(
    root: Path,
    registry: SharedMemoryRegistry,
    change: object,
    error: type[Exception],
    message: str,
) -> None:
    request = request_in(registry, root)
    change(request.inputs[0].parameters)  # type: ignore[operator]
    with pytest.raises(error, match=message):
        convert.decode_request(request, SPEC, registry)


def test_offset_without_region_is_refused(root: Path, registry: SharedMemoryRegistry) -> None:
    message = request_in(registry, root)
    message.inputs[1].parameters["shared_memory_offset"].int64_param = 0
    with pytest.raises(InvalidInput, match="can not be specified without"):
        convert.decode_request(message, SPEC, registry)


def test_outputs_written_to_regions_leave_empty_raw_entries(
    root: Path, registry: SharedMemoryRegistry
) -> None:
    (root / "out").write_bytes(bytes(256))
    registry.register("out", "/out", 0, 256)
    message = pb.ModelInferRequest(model_name="m")
    out = message.outputs.add(name="y")
    out.parameters["shared_memory_region"].string_param = "out"
    out.parameters["shared_memory_byte_size"].int64_param = 64
    out.parameters["shared_memory_offset"].int64_param = 128
    message.outputs.add(name="z")
    placements = convert.output_placements(message, registry)
    y = np.arange(16, dtype=np.float32).reshape(2, 8)
    z = np.ones(3, np.int32)
    response = convert.encode_result(
        InferResult("m", "1", "", [OutputTensor("y", "FP32", y), OutputTensor("z", "INT32", z)]),
        placements,
    )
    assert [len(raw) for raw in response.raw_output_contents] == [0, 12]
    assert list(response.outputs[0].shape) == [2, 8]
    assert (root / "out").read_bytes()[128:192] == y.tobytes()


def test_classification_and_a_region_on_one_output_is_refused(
    root: Path, registry: SharedMemoryRegistry
) -> None:
    (root / "out").write_bytes(bytes(64))
    registry.register("out", "/out", 0, 64)
    message = pb.ModelInferRequest(model_name="m")
    out = message.outputs.add(name="y")
    out.parameters["shared_memory_region"].string_param = "out"
    out.parameters["shared_memory_byte_size"].int64_param = 64
    out.parameters["classification"].int64_param = 2
    with pytest.raises(InvalidInput, match="can't set both"):
        convert.output_placements(message, registry)


def test_requested_output_parameters_reach_the_core() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.outputs.add(name="y").parameters["classification"].int64_param = 3
    message.outputs.add(name="z")
    request = convert.decode_request(message)
    assert request.requested_outputs == ("y", "z")
    assert request.output_parameters == {"y": {"classification": 3}}
