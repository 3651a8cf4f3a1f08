"""The model repository on disk: `<repo>/<name>/config.pbtxt` and `<repo>/<name>/<version>/`.

Reading only; what to load from it is the loader's business. A config is the
protobuf text format of our ModelConfig, so a Triton config.pbtxt reads as it is;
fields that Triton has and we do not are skipped with a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from infergate.gateway.core.config_text import ConfigSyntaxError, ParsedConfig, parse_config_text
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
    # Fields the config.pbtxt names that ModelConfig does not declare (skipped).
    unknown_fields: tuple[str, ...] = ()


def is_valid_model_name(name: str) -> bool:
    return bool(MODEL_NAME.fullmatch(name)) and ".." not in name


def parse_config(text: str, source: str) -> mc.ModelConfig:
    """Parse config.pbtxt text; fields ModelConfig does not declare are skipped."""
    return parse_config_fields(text, source).config


def parse_config_fields(text: str, source: str) -> ParsedConfig:
    """Parse config.pbtxt text, naming the fields ModelConfig does not declare."""
    try:
        return parse_config_text(text)
    except (text_format.ParseError, ConfigSyntaxError) as exc:
        raise ModelLoadError(f"{source}: {exc}") from exc


def list_models(repository: Path) -> list[str]:
    """Model folder names in the repository, sorted; hidden and temp folders skipped."""
    if not repository.is_dir():
        raise ModelLoadError(f"model repository {repository} is not a folder")
    return sorted(
        p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )


def read_model(repository: Path, name: str) -> ModelSource:
    """The config and the newest version folder of one model; ModelLoadError if unusable."""
    return read_versions(repository, name, newest_only=True)[-1]


def read_versions(
    repository: Path,
    name: str,
    *,
    newest_only: bool = False,
    select: Callable[[mc.ModelConfig | None, list[str]], list[str]] | None = None,
) -> list[ModelSource]:
    """One model's config and version folders, oldest first: the newest only, every
    one, or those `select` (config, versions on disk) picks; ModelLoadError if none."""
    if not is_valid_model_name(name):
        raise ModelLoadError(
            f"{shown(name)} is not a valid model name (letters, digits, '_', '-', '.'; "
            "at most 128 characters)"
        )
    folder = repository / name
    config_path = folder / CONFIG_FILE
    config: mc.ModelConfig | None = None
    unknown: tuple[str, ...] = ()
    if config_path.is_file():
        parsed = parse_config_fields(config_path.read_text(), str(config_path))
        config, unknown = parsed.config, parsed.unknown_fields
        if config.name and config.name != name:
            raise ModelLoadError(
                f"{config_path}: config name {shown(config.name)} does not match its folder "
                f"{shown(name)}"
            )
        config.name = name
    on_disk = version_folders(folder)
    if not on_disk:
        raise ModelLoadError(
            f"model {shown(name)} has no version folder (expected {folder}/<number>/model.onnx)"
        )
    chosen = on_disk[-1:] if newest_only or select is None else select(config, on_disk)
    if not chosen:
        raise ModelLoadError(
            f"model {shown(name)}: its version_policy serves none of the versions on disk {on_disk}"
        )
    return [ModelSource(name, folder, config, v, folder / v, unknown) for v in chosen]


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
