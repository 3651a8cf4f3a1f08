"""Calibration and validation data: loaded, checked against the model, kept apart.

A data set is an `.npz` file of arrays with rows along the first axis:
- one array per model input, named as the input (required);
- `labels` (optional): one integer class per row, for classifiers' accuracy;
- one array per model output, named as the output (optional): expected outputs,
  which the gate then uses as its reference instead of running the fp32 model.

Everything is checked against the model's `ModelSpec` before any work starts:
names, dtypes, shapes, row counts, labels in range, and no NaN or Inf anywhere in
the inputs. Each problem is an InvalidInput naming the tensor and what was expected.
For a model that does not batch (max_batch_size 0), each row is one whole request.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from infergate.schema import datatypes
from infergate.schema.errors import InvalidInput
from infergate.schema.tensors import VARIABLE, ModelSpec, TensorSpec

LABELS = "labels"
DEFAULT_VALIDATION_FRACTION = 0.5
DEFAULT_SPLIT_SEED = 0


@dataclass(frozen=True)
class DataSet:
    """Named input arrays with rows along axis 0, and optionally labels and expected
    outputs for the same rows. Build one with `load_npz`, `dataset`, or a sampler."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None
    expected: Mapping[str, np.ndarray] = field(default_factory=dict)
    source: str = ""  # where the rows came from, for the records

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0

    def take(self, index: np.ndarray, source: str) -> DataSet:
        """The rows at `index` (copies), as a new data set."""
        return DataSet(
            {k: np.ascontiguousarray(v[index]) for k, v in self.inputs.items()},
            None if self.labels is None else self.labels[index],
            {k: v[index] for k, v in self.expected.items()},
            source,
        )

    def batches(self, spec: ModelSpec, size: int) -> Iterator[dict[str, np.ndarray]]:
        """Requests as the model takes them: up to `size` rows each, or one whole
        tensor per row for a model that does not batch."""
        if spec.max_batch_size <= 0:
            for i in range(self.rows):
                yield {k: v[i] for k, v in self.inputs.items()}
            return
        step = max(1, min(size, spec.max_batch_size))
        for start in range(0, self.rows, step):
            yield {k: v[start : start + step] for k, v in self.inputs.items()}


@dataclass(frozen=True)
class GateData:
    """The rows a variant is calibrated on and the different rows it is judged on."""

    calibration: DataSet
    validation: DataSet
    note: str  # how the two were obtained (files, a split, a sampler), for the records

    def describe(self) -> dict[str, object]:
        return {
            "calibration_rows": self.calibration.rows,
            "calibration_source": self.calibration.source,
            "validation_rows": self.validation.rows,
            "validation_source": self.validation.source,
            "labels": self.validation.labels is not None,
            "expected_outputs": sorted(self.validation.expected),
            "note": self.note,
        }


def dataset(
    spec: ModelSpec,
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
    expected: Mapping[str, np.ndarray] | None = None,
    source: str = "arrays",
    purpose: str = "data",
) -> DataSet:
    """A checked DataSet from arrays; InvalidInput saying what does not fit `spec`."""
    data = DataSet(dict(inputs), labels, dict(expected or {}), source)
    check(spec, data, purpose)
    return data


def load_npz(path: Path, spec: ModelSpec, purpose: str = "calibration data") -> DataSet:
    """Read and check an .npz data set (see the module docstring for its arrays)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: np.asarray(npz[key]) for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(f"{purpose}: cannot read {path.name} as an .npz file: {exc}") from exc
    missing = [t.name for t in spec.inputs if t.name not in arrays]
    if missing:
        raise InvalidInput(
            f"{purpose} {path.name} has no input {missing} (it holds {sorted(arrays)}); the "
            "model takes " + ", ".join(t.describe() for t in spec.inputs)
        )
    inputs = {t.name: arrays.pop(t.name) for t in spec.inputs}
    labels = arrays.pop(LABELS, None)
    expected = {t.name: arrays.pop(t.name) for t in spec.outputs if t.name in arrays}
    if arrays:
        known = [t.name for t in spec.inputs] + [LABELS] + [t.name for t in spec.outputs]
        raise InvalidInput(
            f"{purpose} {path.name}: unknown array(s) {sorted(arrays)}; it may hold the "
            f"model's inputs, '{LABELS}' and expected outputs: {known}"
        )
    return dataset(spec, inputs, labels, expected, source=path.name, purpose=purpose)


def prepare(
    spec: ModelSpec,
    calibration: DataSet | Path,
    validation: DataSet | Path | None = None,
    *,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
) -> GateData:
    """Calibration and validation sets, checked; one set given is split in two.

    The split is a seeded permutation, so the same file always gives the same two
    halves; the note says it was split, how, and with which seed.
    """
    if (
        isinstance(calibration, Path)
        and isinstance(validation, Path)
        and calibration.resolve() == validation.resolve()
    ):
        raise InvalidInput(
            "calibration and validation are the same file: a variant must be judged on "
            "rows it was not calibrated on (give one file to have it split)"
        )
    cal = _as_dataset(calibration, spec, "calibration data")
    if validation is not None:
        val = _as_dataset(validation, spec, "validation data")
        overlap = _overlap(cal, val)
        note = f"calibration from {cal.source}, validation from {val.source}"
        if overlap:
            note += f"; {overlap} validation rows also appear in the calibration set"
        return GateData(cal, val, note)
    if not 0.0 < validation_fraction < 1.0:
        raise InvalidInput(f"validation_fraction must be in (0, 1), not {validation_fraction}")
    if cal.rows < 2:
        raise InvalidInput(
            f"calibration data {cal.source} has {cal.rows} row: at least 2 are needed to "
            "split it into calibration and validation (or give a validation set)"
        )
    order = np.random.default_rng(seed).permutation(cal.rows)
    n_val = min(cal.rows - 1, max(1, round(cal.rows * validation_fraction)))
    val_idx, cal_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    note = (
        f"one set given ({cal.source}, {cal.rows} rows): split by a permutation seeded "
        f"{seed} into {len(cal_idx)} calibration and {len(val_idx)} validation rows"
    )
    return GateData(
        cal.take(cal_idx, f"{cal.source} (calibration part)"),
        cal.take(val_idx, f"{cal.source} (validation part)"),
        note,
    )


def random_dataset(spec: ModelSpec, rows: int, seed: int, source: str = "") -> DataSet:
    """Rows drawn like the demo models' checks: floats uniform in [0, 1), integers 0.

    For models without real data: the gate then compares a variant with fp32 only.
    """
    if rows < 1:
        raise InvalidInput(f"random data needs at least 1 row, not {rows}")
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for tensor in spec.inputs:
        shape = (rows, *_sample_shape(spec, tensor))
        if any(d == VARIABLE for d in shape):
            raise InvalidInput(
                f"input '{tensor.name}' has variable dims {list(tensor.shape)}: random rows "
                "need fixed shapes (give a data set instead)"
            )
        dtype = datatypes.from_name(tensor.datatype).numpy
        if dtype.kind == "f":
            inputs[tensor.name] = rng.random(shape, dtype=np.float32).astype(dtype)
        else:
            inputs[tensor.name] = np.zeros(shape, dtype=dtype)
    return dataset(spec, inputs, source=source or f"random uniform [0, 1), seed {seed}")


def check(spec: ModelSpec, data: DataSet, purpose: str = "data") -> None:
    """InvalidInput for the first thing in `data` that does not fit `spec`."""
    wanted = {t.name: t for t in spec.inputs}
    missing = [name for name in wanted if name not in data.inputs]
    if missing:
        raise InvalidInput(
            f"{purpose} has no input {missing}; the model takes "
            + ", ".join(t.describe() for t in spec.inputs)
        )
    extra = sorted(set(data.inputs) - set(wanted))
    if extra:
        raise InvalidInput(
            f"{purpose} has {extra}, which the model does not take (its inputs: {list(wanted)})"
        )
    rows = {
        name: _check_tensor(spec, wanted[name], array, purpose, "input")
        for name, array in data.inputs.items()
    }
    if len(set(rows.values())) > 1:
        raise InvalidInput(f"{purpose}: inputs have different row counts {rows}")
    n = next(iter(rows.values()))
    if n == 0:
        raise InvalidInput(f"{purpose} is empty: it has no rows")
    for name, array in data.inputs.items():
        _check_finite(name, array, purpose)
    outputs = {t.name: t for t in spec.outputs}
    for name, array in data.expected.items():
        if name not in outputs:
            raise InvalidInput(f"{purpose}: '{name}' is not an output of the model")
        if _check_tensor(spec, outputs[name], array, purpose, "expected output") != n:
            raise InvalidInput(f"{purpose}: expected output '{name}' has not {n} rows")
    if data.labels is not None:
        _check_labels(spec, data.labels, n, purpose)


def classifier_output(spec: ModelSpec) -> TensorSpec | None:
    """The model's first output that looks like class scores ([batch, C] floats with
    C >= 2), or None: top-1 agreement and accuracy are measured on it."""
    for tensor in spec.outputs:
        sample = _sample_shape(spec, tensor)
        if not datatypes.is_known(tensor.datatype):
            continue
        kind = datatypes.from_name(tensor.datatype).numpy.kind
        if kind == "f" and len(sample) == 1 and sample[0] != VARIABLE and sample[0] >= 2:
            return tensor
    return None


def classes(spec: ModelSpec) -> int | None:
    """How many classes the classifier output has, or None when there is none."""
    tensor = classifier_output(spec)
    return None if tensor is None else _sample_shape(spec, tensor)[0]


def _as_dataset(data: DataSet | Path, spec: ModelSpec, purpose: str) -> DataSet:
    if isinstance(data, Path):
        return load_npz(data, spec, purpose)
    check(spec, data, purpose)
    return data if data.source else replace(data, source=purpose)


def _sample_shape(spec: ModelSpec, tensor: TensorSpec) -> tuple[int, ...]:
    """One row's shape: the spec's shape less the batch dim when the model batches."""
    return tuple(tensor.shape[1:]) if spec.max_batch_size > 0 else tuple(tensor.shape)


def _check_tensor(
    spec: ModelSpec, tensor: TensorSpec, array: np.ndarray, purpose: str, what: str
) -> int:
    if not datatypes.is_known(tensor.datatype) or tensor.datatype in ("BYTES", "BF16"):
        raise InvalidInput(
            f"{purpose}: {what} '{tensor.name}' is {tensor.datatype}, "
            "which calibration does not support"
        )
    dtype = datatypes.from_name(tensor.datatype).numpy
    if array.dtype != dtype:
        raise InvalidInput(
            f"{purpose}: {what} '{tensor.name}' is {array.dtype}; the model takes "
            f"{tensor.datatype} ({dtype})"
        )
    sample = _sample_shape(spec, tensor)
    given = tuple(array.shape[1:])
    fits = len(given) == len(sample) and all(
        want in (VARIABLE, got) for want, got in zip(sample, given, strict=True)
    )
    if array.ndim == 0 or not fits:
        raise InvalidInput(
            f"{purpose}: {what} '{tensor.name}' has shape {list(array.shape)}: rows of shape "
            f"{list(sample)} were expected along the first axis ({tensor.describe()})"
        )
    return int(array.shape[0])


def _check_finite(name: str, array: np.ndarray, purpose: str) -> None:
    if array.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise InvalidInput(
            f"{purpose}: input '{name}' holds {int(bad.sum())} NaN or Inf values "
            f"(the first in row {first}); calibration needs finite inputs"
        )


def _check_labels(spec: ModelSpec, labels: np.ndarray, rows: int, purpose: str) -> None:
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InvalidInput(
            f"{purpose}: '{LABELS}' must be one integer class per row, not "
            f"{labels.dtype} of shape {list(labels.shape)}"
        )
    if labels.shape[0] != rows:
        raise InvalidInput(f"{purpose}: {labels.shape[0]} labels for {rows} rows")
    n_classes = classes(spec)
    if n_classes is None:
        raise InvalidInput(
            f"{purpose} has '{LABELS}', but no output of the model looks like class scores "
            "([batch, classes] floats)"
        )
    if labels.min() < 0 or labels.max() >= n_classes:
        raise InvalidInput(
            f"{purpose}: labels run from {int(labels.min())} to {int(labels.max())}; the "
            f"model has {n_classes} classes (0..{n_classes - 1})"
        )


def _overlap(a: DataSet, b: DataSet) -> int:
    """How many rows of b also appear in a (all inputs equal, byte for byte)."""

    def digests(data: DataSet) -> list[bytes]:
        names = sorted(data.inputs)
        out = []
        for i in range(data.rows):
            digest = hashlib.blake2b(digest_size=16)
            for name in names:
                digest.update(np.ascontiguousarray(data.inputs[name][i]).tobytes())
            out.append(digest.digest())
        return out

    seen = set(digests(a))
    return sum(1 for key in digests(b) if key in seen)
