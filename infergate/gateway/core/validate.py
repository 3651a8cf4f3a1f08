"""Check a decoded request against the model's spec before it goes anywhere.

Everything a runtime would choke on is refused here, with a message naming the
tensor and what was expected, so a bad request never reaches a batch.
"""

from __future__ import annotations

from infergate.gateway.core.request import InferRequest
from infergate.schema.errors import InvalidInput
from infergate.schema.tensors import VARIABLE, ModelSpec


def validate_request(request: InferRequest, spec: ModelSpec) -> int:
    """Raise InvalidInput if the request does not fit; return its row count.

    The row count is the batch dimension when the model batches, else 1.
    """
    model = request.model_name
    seen: set[str] = set()
    rows: int | None = None
    for tensor in request.inputs:
        if tensor.name in seen:
            raise InvalidInput(f"model '{model}': input '{tensor.name}' is given more than once")
        seen.add(tensor.name)
        expected = spec.input(tensor.name)
        if expected is None:
            raise InvalidInput(
                f"model '{model}' has no input '{tensor.name}'; its inputs are "
                f"{[t.name for t in spec.inputs]}"
            )
        if tensor.datatype != expected.datatype:
            raise InvalidInput(
                f"input '{tensor.name}' of model '{model}' must be {expected.datatype}, "
                f"got {tensor.datatype}"
            )
        shape = tensor.shape
        if len(shape) != len(expected.shape) or any(
            want != VARIABLE and got != want
            for got, want in zip(shape, expected.shape, strict=True)
        ):
            raise InvalidInput(
                f"input '{tensor.name}' of model '{model}' must have shape "
                f"{list(expected.shape)} (-1: any), got {list(shape)}"
            )
        if spec.max_batch_size > 0:
            batch = shape[0]
            if batch < 1 or batch > spec.max_batch_size:
                raise InvalidInput(
                    f"input '{tensor.name}' of model '{model}' has batch size {batch}; it "
                    f"must be between 1 and max_batch_size {spec.max_batch_size}"
                )
            if rows is not None and batch != rows:
                raise InvalidInput(
                    f"inputs of model '{model}' disagree on the batch size: "
                    f"'{tensor.name}' has {batch}, another input has {rows}"
                )
            rows = batch
    missing = [t.name for t in spec.inputs if t.name not in seen]
    if missing:
        raise InvalidInput(f"model '{model}' needs inputs {missing}, which the request lacks")
    known = spec.output_names()
    wanted: set[str] = set()
    for name in request.requested_outputs:
        if name not in known:
            raise InvalidInput(
                f"model '{model}' has no output '{name}'; its outputs are {list(known)}"
            )
        if name in wanted:
            raise InvalidInput(f"output '{name}' is requested more than once")
        wanted.add(name)
    return rows if rows is not None else 1
