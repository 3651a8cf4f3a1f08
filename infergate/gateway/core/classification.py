"""Triton's classification extension: an output answered as its top-k classes.

A requested output with the parameter "classification" (an integer k) comes back as
a BYTES tensor instead of its values: for each batch row, the k highest values of
that row (every element after the batch dimension, flattened), highest first, each
written "<value>:<index>" or "<value>:<index>:<label>". Its shape is [rows, k], or
[k] for a model that does not batch (the whole tensor is one row). As Triton writes
them, integer values print as integers and floating-point ones with six decimals
("0.250000", C++'s std::to_string); among equal values the lower index comes first.
Labels come from the output's `label_filename` (one per line, in the model folder);
an index past the file's end, or an empty line, gets none.

Unlike Triton, which quietly returns fewer than k classes when the output has fewer
elements, a k larger than the output is refused (INVALID_ARGUMENT): an answer shorter
than asked for hides a mistake in the request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from infergate.gateway.core.request import InferRequest
from infergate.schema.errors import InvalidInput, shown
from infergate.schema.tensors import VARIABLE, ModelSpec

CLASSIFICATION = "classification"
# Output datatypes whose values rank (Triton refuses BOOL and BYTES too; BF16 travels
# as raw bits numpy cannot order).
RANKED = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64"}
)


def class_counts(request: InferRequest, spec: ModelSpec) -> dict[str, int]:
    """Output name -> k, for the outputs requested as classifications.

    InvalidInput for a k that is not a positive integer, an output that does not
    rank, or (where the output's size is fixed) a k larger than one row of it.
    """
    counts: dict[str, int] = {}
    for name, parameters in request.output_parameters.items():
        if CLASSIFICATION not in parameters:
            continue
        k = parameters[CLASSIFICATION]
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise InvalidInput(
                f"invalid value for 'classification' parameter of output {shown(name)}: "
                f"expected a positive integer (int64_param), got {shown(repr(k))}"
            )
        tensor = next((t for t in spec.outputs if t.name == name), None)
        if tensor is None:
            continue  # validate_outputs names the unknown output
        if tensor.datatype not in RANKED:
            raise InvalidInput(
                f"class result not available for output due to unsupported type "
                f"'{tensor.datatype}': output {shown(name)} cannot be ranked"
            )
        dims = tensor.shape[1:] if spec.max_batch_size > 0 else tensor.shape
        if VARIABLE not in dims:
            _check_count(name, k, math.prod(dims))
        counts[name] = k
    return counts


def classify(
    name: str, data: np.ndarray, k: int, labels: Sequence[str], batches: bool
) -> np.ndarray:
    """The BYTES tensor answering output `name` (values `data`) as top-k classes."""
    rows = data.reshape(len(data), -1) if batches and data.ndim else data.reshape(1, -1)
    _check_count(name, k, rows.shape[1])
    answer = np.empty((rows.shape[0], k), dtype=object)
    integer = rows.dtype.kind in "iu"
    for r, row in enumerate(rows):
        for c, index in enumerate(_top(row, k)):
            value = row[index]
            text = f"{int(value)}" if integer else f"{float(value):f}"
            label = labels[index] if index < len(labels) else ""
            answer[r, c] = (f"{text}:{index}:{label}" if label else f"{text}:{index}").encode()
    return answer if batches and data.ndim else answer.reshape(k)


def _top(row: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest values, highest first; ties by lower index.

    A stable ascending sort of the reversed row, read backwards: equal values then
    come out lower index first, with no negation (which wraps unsigned values).
    """
    order = np.argsort(row[::-1], kind="stable")[::-1][:k]
    return [len(row) - 1 - int(i) for i in order]


def _check_count(name: str, k: int, elements: int) -> None:
    if k > elements:
        raise InvalidInput(
            f"classification of output {shown(name)} asks for {k} classes, but the output "
            f"has {elements} per batch row"
        )


def read_labels(text: str) -> tuple[str, ...]:
    """A label file's lines (a trailing newline ends the last; CR before LF dropped)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return tuple(line.removesuffix("\r") for line in lines)


Labels = Mapping[str, Sequence[str]]
