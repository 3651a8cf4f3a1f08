"""All conversion between protocol messages and the core's numpy world.

Decoding is zero-copy where the wire allows it: raw input bytes become numpy arrays
through np.frombuffer over the message's own buffer, and an input in a registered
shared-memory region is a read-only view of that region (infergate.gateway.
shared_memory). Byte counts are checked against shape and datatype here, since only
the wire format knows them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.registry import IndexEntry
from infergate.gateway.core.request import (
    InferRequest,
    InferResult,
    InputTensor,
    ParameterValue,
)
from infergate.gateway.core.stats import Duration, ModelStats
from infergate.gateway.core.validate import validate_inputs
from infergate.gateway.shared_memory import Region, SharedMemoryRegistry
from infergate.protocol import inference_pb2 as pb
from infergate.schema import codec, datatypes
from infergate.schema.datatypes import Datatype
from infergate.schema.errors import InvalidInput, shown, shown_list
from infergate.schema.tensors import ModelSpec

# ---- requests -------------------------------------------------------------------


# numpy takes at most 64 dimensions; no model here has more than a handful.
MAX_RANK = 32
# Larger than any real tensor's dimension, small enough that no product overflows
# what numpy can describe.
MAX_DIMENSION = 2**31 - 1
# BYTES inputs with more elements than this are decoded on a worker thread: the
# decode is a Python loop, and the event loop must keep serving meanwhile.
DECODE_ON_THREAD_ELEMENTS = 4096
# Tensor parameters naming where in shared memory a tensor is (Triton's extension).
SHM_REGION = "shared_memory_region"
SHM_BYTE_SIZE = "shared_memory_byte_size"
SHM_OFFSET = "shared_memory_offset"
CLASSIFICATION = "classification"
# A request parameter that marks a sequence's request (infergate.gateway.core.sequences).
SEQUENCE_ID = "sequence_id"


@dataclass(frozen=True)
class Placement:
    """Where in shared memory a tensor is: a window of a registered region."""

    region: Region
    offset: int
    byte_size: int


def decode_request(
    message: pb.ModelInferRequest,
    spec: ModelSpec | None = None,
    regions: SharedMemoryRegistry | None = None,
) -> InferRequest:
    """A core request from the wire; InvalidInput naming the tensor when malformed.

    Every check that needs no data runs first, against the message's actual byte
    counts and, when given, the model's spec (names, datatypes, shapes, batch
    size): so a 33-byte request claiming a [250000000, 1] BYTES tensor is refused
    before anything is allocated. Fixed-size raw inputs are then views of the
    message's own bytes (no copy); BYTES elements cost at most their share of the
    message (each takes at least a 4-byte length prefix on the wire). An input in
    shared memory (its parameters name a region of `regions`) is read there: the
    raw entries are then those of the other inputs, in order, as Triton's clients
    send them.
    """
    raw = message.raw_input_contents
    placed = [_placement(tensor, "input", regions) for tensor in message.inputs]
    sent_raw = sum(1 for p in placed if p is None)
    if raw and len(raw) != sent_raw:
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{sent_raw} inputs not in shared memory; send one raw entry per such input, "
            "in order"
        )
    headers = [_header(tensor) for tensor in message.inputs]
    rows = 0
    if spec is not None:
        rows = validate_inputs(message.model_name, ((n, d.name, s) for n, d, s in headers), spec)
    inputs = []
    raw_index = 0
    for tensor, (name, datatype, shape), placement in zip(
        message.inputs, headers, placed, strict=True
    ):
        has_contents = tensor.HasField("contents")
        if placement is not None:
            if has_contents:
                raise InvalidInput(
                    f"unexpected 'content' provided when using shared memory for input "
                    f"tensor {shown(name)}; give its data one way only"
                )
            view = placement.region.view(placement.offset, placement.byte_size, name)
            data = codec.decode_raw(name, datatype, shape, view)  # type: ignore[arg-type]
        elif raw:
            if has_contents:
                raise InvalidInput(
                    f"input {shown(name)} has typed contents while the request also carries "
                    "raw_input_contents; send every input one way or the other, not both"
                )
            data = codec.decode_raw(name, datatype, shape, raw[raw_index])
            raw_index += 1
        else:
            data = _from_contents(name, datatype, shape, tensor.contents)
        inputs.append(InputTensor(name, datatype.name, shape, data))
    return InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        id=message.id,
        inputs=inputs,
        requested_outputs=tuple(o.name for o in message.outputs),
        parameters=decode_parameters(message.parameters) if message.parameters else {},
        output_parameters={
            o.name: decode_parameters(o.parameters) for o in message.outputs if o.parameters
        }
        if message.outputs
        else {},
        inputs_checked_for=spec,
        rows=rows,
    )


def output_placements(
    message: pb.ModelInferRequest, regions: SharedMemoryRegistry | None
) -> dict[str, Placement]:
    """The requested outputs to be written to shared memory, by name, checked against
    their regions before the request runs."""
    placements: dict[str, Placement] = {}
    for tensor in message.outputs:
        placement = _placement(tensor, "output", regions)
        if placement is None:
            continue
        if CLASSIFICATION in tensor.parameters:
            raise InvalidInput(
                f"output {shown(tensor.name)} can't set both '{SHM_REGION}' and '{CLASSIFICATION}'"
            )
        placement.region.check(placement.offset, placement.byte_size, tensor.name)
        placements[tensor.name] = placement
    return placements


def _placement(
    tensor: pb.ModelInferRequest.InferInputTensor | pb.ModelInferRequest.InferRequestedOutputTensor,
    kind: str,
    regions: SharedMemoryRegistry | None,
) -> Placement | None:
    """Where the tensor's shared-memory parameters place it; None: not in shared memory."""
    parameters = tensor.parameters
    if not parameters:
        return None  # the common case, kept cheap
    where = f"{kind} tensor {shown(tensor.name)}"
    if SHM_REGION not in parameters:
        for other in (SHM_OFFSET, SHM_BYTE_SIZE):
            if other in parameters:
                raise InvalidInput(
                    f"'{other}' can not be specified without '{SHM_REGION}' parameter for {where}"
                )
        return None
    region_name = _parameter(parameters, SHM_REGION, "string_param", where)
    if SHM_BYTE_SIZE not in parameters:
        raise InvalidInput(
            f"'{SHM_BYTE_SIZE}' must be specified along with '{SHM_REGION}' parameter for {where}"
        )
    byte_size = _parameter(parameters, SHM_BYTE_SIZE, "int64_param", where)
    offset = (
        _parameter(parameters, SHM_OFFSET, "int64_param", where) if SHM_OFFSET in parameters else 0
    )
    assert isinstance(region_name, str) and isinstance(byte_size, int)
    assert isinstance(offset, int)
    if regions is None:
        raise InvalidInput(f"{where} names a shared memory region, but this gateway has none")
    return Placement(regions.get(region_name), offset, byte_size)


def _parameter(
    parameters: Mapping[str, pb.InferParameter], key: str, choice: str, where: str
) -> ParameterValue:
    value = parameters[key]
    if value.WhichOneof("parameter_choice") != choice:
        raise InvalidInput(
            f"invalid value type for '{key}' parameter for {where}, expected {choice}"
        )
    found: ParameterValue = getattr(value, choice)
    return found


def decodes_on_thread(message: pb.ModelInferRequest) -> bool:
    """Whether decoding this request is long Python work (many BYTES elements).

    Never for a sequence's request: decoding on the event loop keeps the requests
    of one stream in the order they came, which a sequence's steps need.
    """
    if SEQUENCE_ID in message.parameters:
        return False
    for tensor in message.inputs:
        if tensor.datatype == "BYTES" and len(tensor.shape) <= MAX_RANK:
            count = 1
            for dim in tensor.shape:
                count *= max(0, min(dim, MAX_DIMENSION))
            if count > DECODE_ON_THREAD_ELEMENTS:
                return True
    return False


def _header(tensor: pb.ModelInferRequest.InferInputTensor) -> tuple[str, Datatype, tuple[int, ...]]:
    name = tensor.name
    datatype = datatypes.BY_NAME.get(tensor.datatype)
    if datatype is None:
        raise InvalidInput(
            f"input {shown(name)} has unknown datatype {shown(tensor.datatype)}; expected one "
            f"of {sorted(datatypes.BY_NAME)}"
        )
    shape = tuple(tensor.shape)
    if len(shape) > MAX_RANK:
        raise InvalidInput(
            f"input {shown(name)} has {len(shape)} dimensions; at most {MAX_RANK} are accepted"
        )
    if shape and min(shape) < 0:
        raise InvalidInput(
            f"input {shown(name)} has a negative dimension in shape {shown_list(shape)}"
        )
    if shape and max(shape) > MAX_DIMENSION:
        raise InvalidInput(
            f"input {shown(name)} has a dimension above {MAX_DIMENSION} in shape "
            f"{shown_list(shape)}"
        )
    return name, datatype, shape


def _from_contents(
    name: str,
    datatype: datatypes.Datatype,
    shape: tuple[int, ...],
    contents: pb.InferTensorContents,
) -> np.ndarray:
    count = math.prod(shape)
    if datatype.contents_field is None:
        if count == 0:
            return np.zeros(shape, dtype=datatype.numpy)
        raise InvalidInput(
            f"input {shown(name)}: {datatype.name} can only be sent as raw_input_contents"
        )
    values = getattr(contents, datatype.contents_field)
    if len(values) != count:
        raise InvalidInput(
            f"input {shown(name)}: {datatype.contents_field} has {len(values)} elements, but "
            f"shape {shown_list(shape)} needs {count}"
        )
    if datatype.name == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    try:
        # The typed fields are wider than small types (int32 for INT8): refuse what
        # does not fit rather than wrap around silently.
        wide = np.asarray(values)
        array = wide.astype(datatype.numpy)
        if datatype.numpy.kind in "iu" and not np.array_equal(array, wide):
            raise OverflowError
    except (OverflowError, ValueError):
        raise InvalidInput(
            f"input {shown(name)}: a value in {datatype.contents_field} does not fit "
            f"{datatype.name}"
        ) from None
    return array.reshape(shape)


def decode_parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, ParameterValue]:
    decoded: dict[str, ParameterValue] = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            decoded[key] = getattr(value, choice)
    return decoded


# ---- responses ------------------------------------------------------------------


def encode_result(
    result: InferResult, placements: Mapping[str, Placement] | None = None
) -> pb.ModelInferResponse:
    """Outputs as raw little-endian bytes, in the order of the result; an output
    placed in shared memory is written there, and its raw entry left empty (as
    Triton does, so that the entries still line up with the outputs)."""
    response = pb.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=result.id
    )
    raw = response.raw_output_contents
    for output in result.outputs:
        tensor = response.outputs.add(name=output.name, datatype=output.datatype)
        tensor.shape.extend(output.data.shape)
        placement = placements.get(output.name) if placements else None
        if placement is None:
            raw.append(codec.encode_raw(output.datatype, output.data))
            continue
        placement.region.write(
            placement.offset, placement.byte_size, output.name, output.datatype, output.data
        )
        raw.append(b"")
    return response


# ---- metadata, config, statistics, index ---------------------------------------


def model_metadata(model: ModelVersion, versions: Sequence[str]) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(
        name=model.name, versions=list(versions), platform=model.platform
    )
    for tensor in model.spec.inputs:
        response.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    for tensor in model.spec.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    return response


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def model_statistics(name: str, version: str, stats: ModelStats) -> pb.ModelStatistics:
    s = stats
    message = pb.ModelStatistics(
        name=name,
        version=version,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(s.success),
            fail=_duration(s.fail),
            queue=_duration(s.queue),
            compute_input=_duration(s.compute_input),
            compute_infer=_duration(s.compute_infer),
            compute_output=_duration(s.compute_output),
            cache_hit=_duration(s.cache_hit),
            cache_miss=_duration(s.cache_miss),
        ),
    )
    for size, batch in sorted(s.batches.items()):
        message.batch_stats.add(
            batch_size=size,
            compute_input=_duration(batch.compute_input),
            compute_infer=_duration(batch.compute_infer),
            compute_output=_duration(batch.compute_output),
        )
    return message


def repository_index(rows: Iterable[IndexEntry]) -> pb.RepositoryIndexResponse:
    response = pb.RepositoryIndexResponse()
    for row in rows:
        response.models.add(name=row.name, version=row.version, state=row.state, reason=row.reason)
    return response
