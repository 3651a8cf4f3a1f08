"""Match the tensor names a model's config uses to the tensors of one artifact.

A config names a model's inputs and outputs once (`x`, `y`), but formats disagree on
what the tensors are called: a `.tflite` exported from Keras calls its input
`serving_default_x:0` and its output `StatefulPartitionedCall_1:0`, with the
signature names `x` and `output_0`. A backend describes its artifact's tensors as
ArtifactTensors and asks `map_names` which name each one answers to, so the same
model answers under the same names whichever backend runs it.

Config names are matched, in this order, by
1. exact name (the runtime's name for the tensor, or one of its aliases),
2. signature name (TFLite's SignatureDef keys),
3. position, for the tensors still unmatched, when the counts agree, each pair agrees
   in datatype and shape, and no other pairing would (else it is a guess).
Position is a fallback for formats whose tensor names a converter made up (TFLite);
formats whose names the author chose (ONNX, OpenVINO IR) match by name only, since
there a name that does not match is a mistake in the config, not a convention.
Whatever cannot be matched without guessing refuses to load, naming both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import VARIABLE, TensorSpec


@dataclass(frozen=True)
class ArtifactTensor:
    """One input or output as the runtime sees it."""

    spec: TensorSpec  # the runtime's own name, datatype and shape (-1: variable)
    aliases: tuple[str, ...] = ()  # other names it answers to (OpenVINO keeps several)
    signature_name: str = ""  # its key in the artifact's signature, if it has one

    @property
    def default_name(self) -> str:
        """The name it is served under when no config names it."""
        return self.signature_name or self.spec.name

    def answers_to(self, name: str) -> bool:
        return name == self.spec.name or name in self.aliases

    def has_signature_name(self, name: str) -> bool:
        return bool(self.signature_name) and self.signature_name == name

    def describe(self) -> str:
        signature = f" (signature '{self.signature_name}')" if self.signature_name else ""
        return f"'{self.spec.name}'{signature} {self.spec.datatype}{list(self.spec.shape)}"


def map_names(
    kind: str,
    expected: Sequence[TensorSpec] | None,
    actual: Sequence[ArtifactTensor],
    *,
    by_position: bool,
    where: str,
) -> tuple[str, ...]:
    """The name each artifact tensor is served under, in the artifact's order.

    `kind` is "input" or "output" and `where` names the artifact, both for messages.
    `expected` is what the config declares (None or empty: no config, every tensor
    keeps its default name). Artifact tensors the config leaves out keep their
    default names too; the loader decides whether that is allowed. Raises
    ModelLoadError when a config tensor cannot be matched without guessing.
    """
    if not expected:
        return _unique(kind, [t.default_name for t in actual], actual, where)
    public: list[str | None] = [None] * len(actual)
    pending = list(expected)
    stages: tuple[tuple[str, Callable[[ArtifactTensor, str], bool]], ...] = (
        ("name", ArtifactTensor.answers_to),
        ("signature name", ArtifactTensor.has_signature_name),
    )
    for stage, matches in stages:
        unmatched: list[TensorSpec] = []
        for want in pending:
            hits = [i for i, t in enumerate(actual) if public[i] is None and matches(t, want.name)]
            if len(hits) > 1:
                raise ModelLoadError(
                    f"{where}: config {kind} '{want.name}' matches several {kind}s by {stage}: "
                    f"{_describe([actual[i] for i in hits])}"
                )
            if hits:
                public[hits[0]] = want.name
            else:
                unmatched.append(want)
        pending = unmatched
    if pending:
        free = [i for i, name in enumerate(public) if name is None]
        problem = _position_problem(pending, [actual[i] for i in free]) if by_position else ""
        if not by_position or problem:
            how = f"by name, signature name or position ({problem})" if problem else "by name"
            matched = (
                f"; all of the model's {kind}s: {_describe(actual)}"
                if len(free) < len(actual)
                else ""
            )
            raise ModelLoadError(
                f"{where}: cannot match config {kind}s {_describe_specs(pending)} to the "
                f"model's {kind}s {_describe([actual[i] for i in free])} {how}{matched}"
            )
        for want, i in zip(pending, free, strict=True):
            public[i] = want.name
    names = [name or t.default_name for name, t in zip(public, actual, strict=True)]
    return _unique(kind, names, actual, where)


def agrees(want: TensorSpec, have: TensorSpec) -> bool:
    """Same datatype and rank; every dim equal or variable in the artifact."""
    return (
        want.datatype == have.datatype
        and len(want.shape) == len(have.shape)
        and all(h in (VARIABLE, w) for w, h in zip(want.shape, have.shape, strict=True))
    )


def _position_problem(wants: Sequence[TensorSpec], haves: Sequence[ArtifactTensor]) -> str:
    """Why pairing these by position would be a guess; "" when it is safe."""
    if len(wants) != len(haves):
        return f"{len(wants)} left in the config, {len(haves)} in the model"
    for want, have in zip(wants, haves, strict=True):
        if not agrees(want, have.spec):
            return f"'{want.name}' {want.datatype}{list(want.shape)} != {have.describe()}"
    if _count_pairings(wants, [h.spec for h in haves], limit=2) > 1:
        return "several of them agree in datatype and shape, so their order cannot be trusted"
    return ""


def _count_pairings(wants: Sequence[TensorSpec], haves: Sequence[TensorSpec], limit: int) -> int:
    """How many one-to-one pairings agree, counting no further than `limit`."""

    def count(k: int, used: frozenset[int]) -> int:
        if k == len(wants):
            return 1
        total = 0
        for j, have in enumerate(haves):
            if j not in used and agrees(wants[k], have):
                total += count(k + 1, used | {j})
                if total >= limit:
                    break
        return total

    return count(0, frozenset())


def _unique(
    kind: str, names: list[str], actual: Sequence[ArtifactTensor], where: str
) -> tuple[str, ...]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ModelLoadError(
                f"{where}: two {kind}s would be served as '{name}'; the model's {kind}s: "
                f"{_describe(actual)}"
            )
        seen.add(name)
    return tuple(names)


def _describe(tensors: Sequence[ArtifactTensor]) -> str:
    return "[" + ", ".join(t.describe() for t in tensors) + "]"


def _describe_specs(specs: Sequence[TensorSpec]) -> str:
    return "[" + ", ".join(f"'{t.name}' {t.datatype}{list(t.shape)}" for t in specs) + "]"


def public_specs(actual: Sequence[ArtifactTensor], names: Sequence[str]) -> tuple[TensorSpec, ...]:
    """The artifact's tensors under the names they are served as."""
    return tuple(
        TensorSpec(name, t.spec.datatype, t.spec.shape)
        for name, t in zip(names, actual, strict=True)
    )
