"""Warm-up at load: prove a model runs, pay its lazy set-up, and keep a canary.

A config's `model_warmup` samples (Triton's: zero, random or file data per input,
a batch size, a repeat count) run as described, and a failing one fails the load:
the config said what must work. Without samples, one synthetic batch-1 call on
zeros (empty strings for BYTES) runs instead, and if it fails the model still
loads, with a warning: zeros are not a valid input for every model (Triton's
`simple_string` casts its strings to numbers), and a valid model must never be
refused for that.

What ran is the arm's canary (infergate.gateway.core.routing): inputs the arm is
known to run, to tell a failing arm from a failing request later.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from infergate.backends.base import LoadedModel
from infergate.protocol import model_config_pb2 as mc
from infergate.schema import codec, datatypes
from infergate.schema.errors import ModelLoadError, shown
from infergate.schema.tensors import VARIABLE, ModelSpec, Tensors

log = logging.getLogger(__name__)

# Where Triton keeps warm-up data files, under the model's folder.
WARMUP_DIR = "warmup"


def warm_up(
    runtime: LoadedModel, spec: ModelSpec, config: mc.ModelConfig, model_folder: Path
) -> Tensors | None:
    """Run the config's warm-up samples (or one synthetic call); the canary, if any."""
    name = config.name
    if not config.model_warmup:
        inputs = zeros(spec, 1)
        try:
            _run(runtime, spec, inputs, name, "synthetic warm-up")
        except ModelLoadError as exc:
            log.warning(
                "model %s: %s; it loads anyway (give it model_warmup samples it accepts)",
                name,
                exc,
            )
            return None
        return inputs
    canary: Tensors | None = None
    for sample in config.model_warmup:
        inputs = sample_inputs(sample, spec, model_folder, name)
        for _ in range(max(1, sample.count)):
            _run(runtime, spec, inputs, name, f"warm-up sample {shown(sample.name)}")
        canary = canary or inputs
    return canary


def sample_inputs(
    sample: mc.ModelWarmup, spec: ModelSpec, model_folder: Path, model: str
) -> Tensors:
    """A warm-up sample's inputs, as Triton defines them."""
    where = f"model {shown(model)}: warm-up sample {shown(sample.name)}"
    batches = spec.max_batch_size > 0
    if batches and not 1 <= sample.batch_size <= spec.max_batch_size:
        raise ModelLoadError(
            f"{where}: batch_size must be between 1 and max_batch_size {spec.max_batch_size}"
        )
    if not batches and sample.batch_size > 1:
        raise ModelLoadError(f"{where}: the model does not batch, so batch_size must be 0 or 1")
    missing = [t.name for t in spec.inputs if t.name not in sample.inputs]
    if missing:
        raise ModelLoadError(f"{where}: no data for inputs {missing}")
    rng = np.random.default_rng(0)
    inputs: Tensors = {}
    for input_name, described in sample.inputs.items():
        expected = spec.input(input_name)
        if expected is None:
            raise ModelLoadError(f"{where}: the model has no input {shown(input_name)}")
        datatype = datatypes.BY_CONFIG_TYPE.get(described.data_type)
        if datatype is None or datatype.name != expected.datatype:
            raise ModelLoadError(f"{where}: input {shown(input_name)} must be {expected.datatype}")
        batch: tuple[int, ...] = (sample.batch_size,) if batches else ()
        shape = batch + tuple(int(d) for d in described.dims)
        choice = described.WhichOneof("input_data_type")
        if choice == "input_data_file":
            inputs[input_name] = _from_file(
                model_folder / WARMUP_DIR / described.input_data_file, datatype, shape, where
            )
        elif choice == "random_data" and datatype.name != "BYTES":  # Triton: strings get zeros
            inputs[input_name] = _random(rng, datatype, shape)
        else:
            inputs[input_name] = _zeros_of(datatype, shape)
    return inputs


def zeros(spec: ModelSpec, rows: int) -> Tensors:
    """Inputs of zeros (empty strings for BYTES) with `rows` rows where the model batches."""
    inputs: Tensors = {}
    for tensor in spec.inputs:
        dims = list(tensor.shape)
        if spec.max_batch_size > 0 and dims:
            dims[0] = rows
        shape = tuple(1 if d == VARIABLE else d for d in dims)
        inputs[tensor.name] = _zeros_of(datatypes.from_name(tensor.datatype), shape)
    return inputs


def with_rows(sample: Tensors, rows: int) -> Tensors:
    """A batching model's sample grown (or cut) to `rows` rows, repeating its rows."""
    return {
        name: np.resize(array, (rows, *array.shape[1:])) if array.ndim else array
        for name, array in sample.items()
    }


def _run(runtime: LoadedModel, spec: ModelSpec, inputs: Tensors, model: str, what: str) -> None:
    try:
        outputs = runtime.infer(inputs)
    except Exception as exc:
        raise ModelLoadError(f"model {shown(model)} failed its {what}: {exc}") from exc
    missing = set(spec.output_names()) - set(outputs)
    if missing:
        raise ModelLoadError(f"model {shown(model)} did not return outputs {sorted(missing)}")


def _zeros_of(datatype: datatypes.Datatype, shape: tuple[int, ...]) -> np.ndarray:
    if datatype.name == "BYTES":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=datatype.numpy)


def _random(
    rng: np.random.Generator, datatype: datatypes.Datatype, shape: tuple[int, ...]
) -> np.ndarray:
    kind = datatype.numpy.kind
    if kind == "f":
        return rng.random(shape).astype(datatype.numpy)
    if kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    low = 0 if kind == "u" else -128  # small values: valid for every integer width
    return rng.integers(low, 127, shape, endpoint=True).astype(datatype.numpy)


def _from_file(
    path: Path, datatype: datatypes.Datatype, shape: tuple[int, ...], where: str
) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{where}: cannot read {path}: {exc}") from exc
    try:
        return codec.decode_raw(path.name, datatype, shape, data).copy()
    except Exception as exc:
        raise ModelLoadError(
            f"{where}: {path.name} does not hold shape {list(shape)}: {exc}"
        ) from exc
