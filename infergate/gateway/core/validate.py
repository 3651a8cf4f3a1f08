"""Check a request against the model's spec before it goes anywhere.

Everything a runtime would choke on is refused here, with a message naming the
tensor and what was expected, so a bad request never reaches a batch. The checks
need only each input's name, datatype and shape, so the wire conversion runs them
before it decodes (or allocates) a single element (validate_inputs), and the core
runs them again on the decoded request (validate_request): a model swapped in
between may expect other tensors.
"""

from __future__ import annotations

from collections.abc import Iterable

from infergate.gateway.core.request import InferRequest
from infergate.schema.errors import InvalidInput, shown, shown_list
from infergate.schema.tensors import VARIABLE, ModelSpec

# (name, datatype, shape) of one input, as the request states it.
InputHeader = tuple[str, str, tuple[int, ...]]


def validate_inputs(model: str, inputs: Iterable[InputHeader], spec: ModelSpec) -> int:
    """Raise InvalidInput if the inputs do not fit; return the request's row count.

    The row count is the batch dimension when the model batches, else 1.
    """
    seen: set[str] = set()
    rows: int | None = None
    for name, datatype, shape in inputs:
        if name in seen:
            raise InvalidInput(f"{_where(model)}: input {shown(name)} is given more than once")
        seen.add(name)
        expected = spec.input(name)
        if expected is None:
            raise InvalidInput(
                f"{_where(model)} has no input {shown(name)}; its inputs are "
                f"{shown_list(t.name for t in spec.inputs)}"
            )
        if datatype != expected.datatype:
            raise InvalidInput(
                f"input {shown(name)} of {_where(model)} must be {expected.datatype}, "
                f"got {shown(datatype)}"
            )
        if len(shape) != len(expected.shape) or any(
            want != VARIABLE and got != want
            for got, want in zip(shape, expected.shape, strict=True)
        ):
            raise InvalidInput(
                f"input {shown(name)} of {_where(model)} must have shape "
                f"{list(expected.shape)} (-1: any), got {shown_list(shape)}"
            )
        if spec.max_batch_size > 0:
            batch = shape[0]
            if batch < 1 or batch > spec.max_batch_size:
                raise InvalidInput(
                    f"input {shown(name)} of {_where(model)} has batch size {batch}; it "
                    f"must be between 1 and max_batch_size {spec.max_batch_size}"
                )
            if rows is not None and batch != rows:
                raise InvalidInput(
                    f"inputs of {_where(model)} disagree on the batch size: "
                    f"{shown(name)} has {batch}, another input has {rows}"
                )
            rows = batch
    if len(seen) < len(spec.inputs):
        missing = [t.name for t in spec.inputs if t.name not in seen]
        raise InvalidInput(f"{_where(model)} needs inputs {missing}, which the request lacks")
    return rows if rows is not None else 1


def _where(model: str) -> str:
    """`model 'NAME'`, the name escaped: built only for an error's message, since
    escaping costs every request several microseconds of Python otherwise."""
    return f"model {shown(model)}"


def validate_outputs(model: str, requested: Iterable[str], spec: ModelSpec) -> None:
    known = spec.output_names()
    wanted: set[str] = set()
    for name in requested:
        if name not in known:
            raise InvalidInput(
                f"model {shown(model)} has no output {shown(name)}; its outputs are "
                f"{shown_list(known)}"
            )
        if name in wanted:
            raise InvalidInput(f"output {shown(name)} is requested more than once")
        wanted.add(name)


def validate_request(request: InferRequest, spec: ModelSpec) -> int:
    """Raise InvalidInput if the request does not fit; return its row count."""
    rows = validate_inputs(
        request.model_name, ((t.name, t.datatype, t.shape) for t in request.inputs), spec
    )
    validate_outputs(request.model_name, request.requested_outputs, spec)
    return rows
