"""The accuracy gate: a variant is admitted only if it answers like fp32.

The variant runs the validation set, loaded through the real backend with the
options it will be served with, and its outputs are compared with the reference
(the fp32 artifact's outputs on the same rows, or the expected outputs the data set
carries). Figures:
- `max_abs_error`: the largest |variant - reference| over every output value;
- `mean_rel_error`: mean |variant - reference| / mean |reference|, per output, the
  largest over outputs (relative to the reference's scale, so values near zero do
  not blow it up);
- for classifiers (an output of [batch, C >= 2] floats): `top1_agreement`, the
  share of rows whose argmax matches the reference's, and with labels each side's
  accuracy and the `accuracy_drop` (reference - variant, in absolute points);
- `non_finite_values`: NaN or Inf anywhere in the variant's outputs.

A variant must have finite outputs, and stay within the thresholds
(`GateThresholds`; defaults: accuracy drop <= 0.01, top-1 agreement >= 0.99; no
error bound for classifiers unless given; a model with no classifier output gets
mean relative error <= 0.05 unless another bound is given). Its figures are kept
either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

from infergate.backends.base import LoadedModel
from infergate.optimize.data import DataSet, classifier_output
from infergate.optimize.progress import ProgressSpan
from infergate.schema.errors import InvalidInput, PreconditionFailed
from infergate.schema.tensors import ModelSpec

DEFAULT_MEAN_REL_ERROR = 0.05  # only for models without a classifier output
GATE_BATCH = 32


@dataclass(frozen=True)
class GateThresholds:
    """What a variant must meet; out-of-range values are InvalidInput."""

    max_accuracy_drop: float = 0.01  # absolute, e.g. 0.01 = one point; needs labels
    min_top1_agreement: float = 0.99  # share of rows with fp32's argmax; classifiers
    max_abs_error: float | None = None  # None: not checked
    max_mean_rel_error: float | None = None  # None: DEFAULT_MEAN_REL_ERROR if no classifier

    def __post_init__(self) -> None:
        for name, low, high in (
            ("max_accuracy_drop", 0.0, 1.0),
            ("min_top1_agreement", 0.0, 1.0),
        ):
            _in_range(name, getattr(self, name), low, high)
        for name in ("max_abs_error", "max_mean_rel_error"):
            value = getattr(self, name)
            if value is not None:
                _in_range(name, value, 0.0, math.inf)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> GateThresholds:
        """From text or numbers by name (an admin call, a CLI flag); unknown names and
        values that are not numbers are InvalidInput."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInput(f"unknown gate threshold(s) {unknown}; known: {sorted(known)}")
        parsed: dict[str, float | None] = {}
        for name, value in values.items():
            if value is None or value == "":
                parsed[name] = None
                continue
            try:
                parsed[name] = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"gate threshold {name} must be a number, not {value!r}"
                ) from exc
        return cls(**parsed)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class OutputFigures:
    max_abs_error: float
    mean_abs_error: float
    mean_rel_error: float
    non_finite_values: int


@dataclass(frozen=True)
class GateFigures:
    rows: int
    reference: str  # what the variant was compared with
    non_finite_values: int
    max_abs_error: float
    mean_rel_error: float
    top1_agreement: float | None
    reference_accuracy: float | None
    accuracy: float | None
    accuracy_drop: float | None
    outputs: dict[str, OutputFigures]

    @property
    def finite(self) -> bool:
        return self.non_finite_values == 0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "finite": self.finite}


@dataclass(frozen=True)
class GateVerdict:
    admitted: bool
    reasons: tuple[str, ...]  # each check, passed or failed, with figure and threshold

    def to_dict(self) -> dict[str, object]:
        return {"admitted": self.admitted, "reasons": list(self.reasons)}


def run_model(
    model: LoadedModel,
    spec: ModelSpec,
    data: DataSet,
    batch_size: int = GATE_BATCH,
    progress: ProgressSpan | None = None,
    stage: str = "gate",
) -> dict[str, np.ndarray]:
    """Every output of `model` over `data`, rows in order, by the spec's output names."""
    names = [t.name for t in spec.outputs]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    total = max(1, data.rows)
    done = 0
    for batch in data.batches(spec, batch_size):
        result = model.infer(batch)
        missing = [n for n in names if n not in result]
        if missing:
            raise PreconditionFailed(
                f"the model returned {sorted(result)}, not the outputs {missing} it declares"
            )
        for n in names:
            parts[n].append(np.asarray(result[n]))
        done += int(next(iter(batch.values())).shape[0]) if spec.max_batch_size > 0 else 1
        if progress is not None:
            progress.report(stage, done / total, f"{done}/{data.rows} rows")
    join = np.concatenate if spec.max_batch_size > 0 else np.stack
    return {n: join(parts[n]) for n in names}


def compare(
    spec: ModelSpec,
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
    reference_name: str = "fp32",
) -> GateFigures:
    """The figures of `candidate` against `reference` (outputs over the same rows)."""
    per_output: dict[str, OutputFigures] = {}
    rows = 0
    for tensor in spec.outputs:
        ref = np.asarray(reference[tensor.name], dtype=np.float64)
        got = np.asarray(candidate[tensor.name], dtype=np.float64)
        if ref.shape != got.shape:
            raise PreconditionFailed(
                f"output '{tensor.name}': the variant gave shape {list(got.shape)}, the "
                f"reference {list(ref.shape)}"
            )
        rows = int(ref.shape[0]) if ref.ndim else 1
        bad = int(np.count_nonzero(~np.isfinite(got)))
        diff = np.abs(got - ref)
        scale = float(np.mean(np.abs(ref))) if ref.size else 0.0
        mean_abs = float(np.mean(diff)) if diff.size else 0.0
        per_output[tensor.name] = OutputFigures(
            max_abs_error=float(np.max(diff)) if diff.size else 0.0,
            mean_abs_error=mean_abs,
            mean_rel_error=mean_abs / scale if scale > 0 else mean_abs,
            non_finite_values=bad,
        )
    top1 = ref_acc = acc = drop = None
    scores = classifier_output(spec)
    if scores is not None:
        ref_top = np.argmax(np.asarray(reference[scores.name]), axis=-1)
        got_top = np.argmax(np.asarray(candidate[scores.name]), axis=-1)
        top1 = float(np.mean(ref_top == got_top))
        if labels is not None:
            ref_acc = float(np.mean(ref_top == labels))
            acc = float(np.mean(got_top == labels))
            drop = ref_acc - acc
    return GateFigures(
        rows=rows,
        reference=reference_name,
        non_finite_values=sum(f.non_finite_values for f in per_output.values()),
        max_abs_error=max(f.max_abs_error for f in per_output.values()),
        mean_rel_error=max(f.mean_rel_error for f in per_output.values()),
        top1_agreement=top1,
        reference_accuracy=ref_acc,
        accuracy=acc,
        accuracy_drop=drop,
        outputs=per_output,
    )


def judge(figures: GateFigures, thresholds: GateThresholds) -> GateVerdict:
    """Admit or reject, saying for each check its figure and its bound."""
    passed: list[str] = []
    failed: list[str] = []

    def check(ok: bool, text: str) -> None:
        (passed if ok else failed).append(text)

    check(figures.finite, f"finite outputs ({figures.non_finite_values} NaN/Inf values)")
    if figures.top1_agreement is not None:
        check(
            figures.top1_agreement >= thresholds.min_top1_agreement,
            f"top-1 agreement {figures.top1_agreement:.4f} "
            f"(at least {thresholds.min_top1_agreement})",
        )
    if figures.accuracy_drop is not None:
        check(
            figures.accuracy_drop <= thresholds.max_accuracy_drop,
            f"accuracy drop {figures.accuracy_drop:+.4f} "
            f"({figures.reference_accuracy:.4f} -> {figures.accuracy:.4f}; "
            f"at most {thresholds.max_accuracy_drop})",
        )
    if thresholds.max_abs_error is not None:
        check(
            figures.max_abs_error <= thresholds.max_abs_error,
            f"max abs error {figures.max_abs_error:.4g} (at most {thresholds.max_abs_error})",
        )
    rel_bound = thresholds.max_mean_rel_error
    if rel_bound is None and figures.top1_agreement is None and thresholds.max_abs_error is None:
        rel_bound = DEFAULT_MEAN_REL_ERROR  # no classifier check: bound the error itself
    if rel_bound is not None:
        check(
            figures.mean_rel_error <= rel_bound,
            f"mean relative error {figures.mean_rel_error:.4g} (at most {rel_bound})",
        )
    if failed:
        return GateVerdict(
            False, tuple(f"failed: {t}" for t in failed) + tuple(f"passed: {t}" for t in passed)
        )
    return GateVerdict(True, tuple(f"passed: {t}" for t in passed))


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        raise InvalidInput(f"gate threshold {name} must be a number, not {value!r}")
    if not low <= value <= high:
        bound = f"between {low} and {high}" if math.isfinite(high) else f"at least {low}"
        raise InvalidInput(f"gate threshold {name} must be {bound}, not {value}")
