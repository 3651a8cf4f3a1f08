"""What a model accepts and returns: tensor specs as the protocol sees them.

A ModelSpec is derived once per loaded model version (from its ModelConfig and the
backend's own view of the artifact; see infergate.gateway.core.config_spec) and is
what every request is validated against. Shapes here always include the batch
dimension (-1) when the model batches, unlike ModelConfig dims, which leave it out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

VARIABLE = -1

# Named tensors as runtimes take and return them: a batch's inputs, its outputs.
Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # protocol string, e.g. "FP32"
    shape: tuple[int, ...]  # -1 for variable dimensions

    def describe(self) -> str:
        return f"{self.name} {self.datatype}{list(self.shape)}"


@dataclass(frozen=True)
class ModelSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # 0: the model does not batch and shapes are taken as they are.
    max_batch_size: int

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @functools.cached_property
    def output_datatypes(self) -> dict[str, str]:
        """Output name -> datatype; computed once, read by every request."""
        return {t.name: t.datatype for t in self.outputs}
