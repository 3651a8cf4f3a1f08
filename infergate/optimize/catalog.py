"""Every variant infergate knows how to make, and whether it can be made here.

Variant names per backend (the arm's `variant`; fp32 is the artifact itself):

    onnxruntime  optimized, int8-dynamic, int8-static, fp16 (GPU providers only)
    openvino     int8 (NNCF), bf16, fp16 (where the CPU plugin computes in them)
    tflite       int8, fp16 (from a Keras/SavedModel source, with tensorflow)

`availability` answers "can it be made here, and if not, why" as a value;
`require` turns the same answer into InvalidInput (an unknown name, listing the
known ones) or PreconditionFailed (known, but not here: why).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from infergate.optimize import onnx_variants, openvino_variants, tflite_variants
from infergate.optimize.machine import Machine
from infergate.optimize.recipe import Recipe
from infergate.schema.errors import InvalidInput, PreconditionFailed

RECIPES: dict[tuple[str, str], Recipe] = {
    (r.backend, r.variant): r
    for r in (*onnx_variants.RECIPES, *openvino_variants.RECIPES, *tflite_variants.RECIPES)
}


@dataclass(frozen=True)
class Availability:
    """Whether a variant can be made here; `reason` says why not (empty when it can)."""

    backend: str
    variant: str
    available: bool
    reason: str
    summary: str  # what the variant is

    @property
    def name(self) -> str:
        return f"{self.backend}.{self.variant}"


def known_variants(backend: str | None = None) -> dict[str, tuple[str, ...]]:
    """Backend -> its variant names, in the catalog's order."""
    known: dict[str, list[str]] = {}
    for b, v in RECIPES:
        if backend is None or b == backend:
            known.setdefault(b, []).append(v)
    return {b: tuple(vs) for b, vs in known.items()}


def recipe(backend: str, variant: str) -> Recipe:
    """The recipe for a variant; InvalidInput naming the known ones if there is none."""
    found = RECIPES.get((backend, variant))
    if found is not None:
        return found
    known = known_variants()
    if backend not in known:
        raise InvalidInput(
            f"no variants are known for backend '{backend}'; backends with variants: "
            f"{sorted(known)}"
        )
    raise InvalidInput(
        f"unknown variant '{variant}' for {backend}; known: {', '.join(known[backend])}"
    )


def availability(backend: str, variant: str, machine: Machine, version_dir: Path) -> Availability:
    """Whether this variant of the model in `version_dir` can be made on `machine`."""
    found = recipe(backend, variant)
    reason = found.check(machine, version_dir)
    return Availability(backend, variant, reason is None, reason or "", found.summary)


def require(backend: str, variant: str, machine: Machine, version_dir: Path) -> Recipe:
    """The recipe, or PreconditionFailed saying why it cannot be made here."""
    found = availability(backend, variant, machine, version_dir)
    if not found.available:
        raise PreconditionFailed(f"{found.name} cannot be made here: {found.reason}")
    return recipe(backend, variant)


def plan(
    version_dir: Path,
    machine: Machine,
    backends: Iterable[str] | None = None,
    variants: Iterable[str] | None = None,
) -> list[Availability]:
    """Every known variant (of these backends, with these names), available or not.

    Unknown backend or variant names are InvalidInput, so a typo is not silently
    "nothing to build".
    """
    known = known_variants()
    chosen_backends = list(known) if backends is None else list(dict.fromkeys(backends))
    for backend in chosen_backends:
        if backend not in known:
            raise InvalidInput(
                f"no variants are known for backend '{backend}'; backends with variants: "
                f"{sorted(known)}"
            )
    wanted = None if variants is None else set(variants)
    if wanted is not None:
        offered = {v for b in chosen_backends for v in known[b]}
        unknown = sorted(wanted - offered)
        if unknown:
            raise InvalidInput(
                f"unknown variant(s) {unknown}; known: "
                + "; ".join(f"{b}: {', '.join(known[b])}" for b in chosen_backends)
            )
    return [
        availability(b, v, machine, version_dir)
        for b in chosen_backends
        for v in known[b]
        if wanted is None or v in wanted
    ]
