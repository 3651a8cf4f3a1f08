"""The model repository on disk: `<repo>/<name>/config.pbtxt` and `<repo>/<name>/<version>/`.

Reading only; what to load from it is the loader's business. A config is the
protobuf text format of our ModelConfig, so a Triton config.pbtxt reads as it is;
fields that Triton has and we do not are skipped with a warning.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import ModelLoadError, shown

log = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"
# Model names become folder names and metric labels: keep them boring.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class ModelSource:
    """Where one model lives on disk and the version to serve from it."""

    name: str
    folder: Path
    config: mc.ModelConfig | None  # None: derive it from the artifact
    version: str
    version_dir: Path


def is_valid_model_name(name: str) -> bool:
    return bool(MODEL_NAME.fullmatch(name)) and ".." not in name


def parse_config(text: str, source: str) -> mc.ModelConfig:
    """Parse config.pbtxt text; unknown (Triton-only) fields are skipped with a warning."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as strict_error:
        config = mc.ModelConfig()
        try:
            text_format.Parse(text, config, allow_unknown_field=True)
        except text_format.ParseError as exc:
            raise ModelLoadError(f"{source}: {exc}") from exc
        log.warning("%s: ignoring what infergate does not support: %s", source, strict_error)
    return config


def list_models(repository: Path) -> list[str]:
    """Model folder names in the repository, sorted; hidden and temp folders skipped."""
    if not repository.is_dir():
        raise ModelLoadError(f"model repository {repository} is not a folder")
    return sorted(
        p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )


def read_model(repository: Path, name: str) -> ModelSource:
    """The config and the newest version folder of one model; ModelLoadError if unusable."""
    if not is_valid_model_name(name):
        raise ModelLoadError(
            f"{shown(name)} is not a valid model name (letters, digits, '_', '-', '.'; "
            "at most 128 characters)"
        )
    folder = repository / name
    config_path = folder / CONFIG_FILE
    config: mc.ModelConfig | None = None
    if config_path.is_file():
        config = parse_config(config_path.read_text(), str(config_path))
        if config.name and config.name != name:
            raise ModelLoadError(
                f"{config_path}: config name {shown(config.name)} does not match its folder "
                f"{shown(name)}"
            )
        config.name = name
    versions = version_folders(folder)
    if not versions:
        raise ModelLoadError(
            f"model {shown(name)} has no version folder (expected {folder}/<number>/model.onnx)"
        )
    version = versions[-1]
    return ModelSource(name, folder, config, version, folder / version)


def version_folders(model_folder: Path) -> list[str]:
    """A model's version folder names (numbers), oldest first; none if no such folder."""
    if not model_folder.is_dir():
        return []
    return sorted(
        (p.name for p in model_folder.iterdir() if p.is_dir() and _is_number(p.name)),
        key=version_key,
    )


def version_key(version: str) -> tuple[int, str]:
    """Sorts versions by number; a name that is no number (never on disk) comes first."""
    return (int(version), "") if _is_number(version) else (-1, version)


def _is_number(name: str) -> bool:
    # isdigit() alone admits digits such as '²' that int() refuses.
    return name.isascii() and name.isdigit()
