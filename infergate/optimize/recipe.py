"""What a variant recipe is: a check (can it be made here?) and a build.

Each backend's module (onnx_variants, openvino_variants, tflite_variants) defines
recipes; `catalog` gathers them. A check returns None when the variant can be made
here, or the reason it cannot (a sentence for the caller); a build writes the
artifact into `BuildContext.out_dir` and says how to serve it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infergate.backends.base import BackendOptions
from infergate.optimize.data import DataSet
from infergate.optimize.machine import Machine
from infergate.optimize.progress import ProgressSpan
from infergate.schema.errors import PreconditionFailed
from infergate.schema.tensors import ModelSpec


@dataclass(frozen=True)
class BuildContext:
    version_dir: Path  # the model version folder holding the fp32 artifact
    out_dir: Path  # the variant's staging folder: write the artifact here
    work_dir: Path  # scratch space for intermediate files, removed afterwards
    spec: ModelSpec
    calibration: DataSet
    machine: Machine
    options: BackendOptions  # the serving options (providers, threads, parameters)
    progress: ProgressSpan


@dataclass(frozen=True)
class BuiltArtifact:
    artifact: str  # its file name inside out_dir (the one the backend loads)
    sources: tuple[Path, ...]  # the fp32 files (or Keras source) it was made from
    parameters: Mapping[str, str] = field(default_factory=dict)  # BackendOptions.extra
    details: Mapping[str, object] = field(default_factory=dict)  # how it was made


Check = Callable[[Machine, Path], "str | None"]
Build = Callable[[BuildContext], BuiltArtifact]


@dataclass(frozen=True)
class Recipe:
    backend: str
    variant: str
    summary: str
    check: Check
    build: Build


def first_file(version_dir: Path, names: tuple[str, ...], what: str) -> Path:
    """The first of `names` present in the version folder; PreconditionFailed if none."""
    for name in names:
        if (version_dir / name).is_file():
            return version_dir / name
    raise PreconditionFailed(f"no {what} in {version_dir} (looked for {', '.join(names)})")


def missing_file(version_dir: Path, names: tuple[str, ...], what: str) -> str | None:
    """None when one of `names` is in the version folder, else the reason."""
    if any((version_dir / name).is_file() for name in names):
        return None
    return f"there is no {what} in the version folder (looked for {', '.join(names)})"


def map_inputs(data_names: list[str], artifact_names: list[str], where: str) -> dict[str, str]:
    """Data set input name -> the artifact's input name: the same names, or the one
    input of each by position; PreconditionFailed otherwise."""
    if set(data_names) <= set(artifact_names):
        return {n: n for n in data_names}
    if len(data_names) == 1 and len(artifact_names) == 1:
        return {data_names[0]: artifact_names[0]}
    raise PreconditionFailed(
        f"{where}: the artifact's inputs {artifact_names} do not match the model's {data_names}"
    )
