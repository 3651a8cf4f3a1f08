"""Temporary model repositories for benchmarks: twins of demo models with other configs.

A twin is a folder `<dest>/<twin name>/` holding a config.pbtxt derived from the
source model's (renamed, with batching or caching changed) and a version folder
whose model.onnx is a symlink to the source's, so a 100 MB model costs nothing to
twin. Twins are pinned to onnxruntime, so figures compare with onnxruntime called
in process whatever other backends are installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from infergate.protocol import model_config_pb2 as mc

ARTIFACT = "model.onnx"
CONFIG_FILE = "config.pbtxt"


class RepositoryError(RuntimeError):
    """A source model is missing or its config cannot be read."""


@dataclass(frozen=True)
class Twin:
    """A model to put in a benchmark repository, made from `source` in the real one."""

    source: str
    max_batch_size: int | None = None  # None: the source's
    # None: no dynamic_batching block (batching off); a number: on with this delay.
    queue_delay_us: int | None = None
    response_cache: bool = False


def source_version_dir(repository: Path, model: str) -> Path:
    """The newest version folder of `model` that holds a model.onnx."""
    folder = repository / model
    versions = sorted(
        (p for p in folder.glob("*") if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
        reverse=True,
    )
    if not versions or not (versions[0] / ARTIFACT).is_file():
        raise RepositoryError(
            f"no {folder}/<version>/{ARTIFACT} (for mlp_large: `make models` builds it)"
        )
    return versions[0]


def twin_config(repository: Path, name: str, twin: Twin) -> mc.ModelConfig:
    config = mc.ModelConfig()
    path = repository / twin.source / CONFIG_FILE
    if path.is_file():
        try:
            text_format.Parse(path.read_text(), config, allow_unknown_field=True)
        except text_format.ParseError as exc:
            raise RepositoryError(f"{path}: {exc}") from exc
    config.name = name
    config.backend = "onnxruntime"
    config.platform = "onnxruntime_onnx"
    del config.allowed_backends[:]
    if twin.max_batch_size is not None:
        config.max_batch_size = twin.max_batch_size
    config.ClearField("dynamic_batching")
    if twin.queue_delay_us is not None:
        config.dynamic_batching.max_queue_delay_microseconds = twin.queue_delay_us
    config.ClearField("response_cache")
    if twin.response_cache:
        config.response_cache.enable = True
    return config


def make_repository(dest: Path, twins: Mapping[str, Twin], source_repository: Path) -> Path:
    """Write `dest` with one folder per twin; RepositoryError if a source is missing."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, twin in twins.items():
        version_dir = source_version_dir(source_repository, twin.source)
        config = twin_config(source_repository, name, twin)
        folder = dest / name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        link = folder / "1" / ARTIFACT
        link.unlink(missing_ok=True)
        link.symlink_to((version_dir / ARTIFACT).resolve())
        (folder / CONFIG_FILE).write_text(
            "# Written by the benchmark (bench/twin_repository.py).\n"
            + text_format.MessageToString(config)
        )
    return dest
