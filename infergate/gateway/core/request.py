"""The core's view of an inference request and its result, free of protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

ParameterValue = bool | int | float | str


@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray  # already shaped; BYTES as an object array of bytes


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str  # "" for the latest ready version
    id: str
    inputs: list[InputTensor]
    # Empty: every output of the model.
    requested_outputs: tuple[str, ...] = ()
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    # Per requested output, the parameters the request gave it (by output name; only
    # outputs with any): "classification" (int, top-k) is the core's.
    output_parameters: Mapping[str, Mapping[str, ParameterValue]] = field(default_factory=dict)
    # The caller's remaining time (its gRPC deadline); None: no deadline.
    timeout_s: float | None = None
    # Set by whoever already checked the inputs against a spec (the wire conversion
    # does, before decoding): that spec, and the row count it found; the core then
    # checks only the outputs when the model serving the request has that very spec.
    inputs_checked_for: object | None = None
    rows: int = 0


@dataclass(slots=True)
class OutputTensor:
    name: str
    datatype: str
    data: np.ndarray


@dataclass(slots=True)
class InferResult:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
