"""Atomic writes to the model repository: a registration is there in full or not at all.

The commit protocol, so that a crash at any point leaves either the old state or the
new one (POSIX rename is atomic within a filesystem, and `.staging` lives inside
the repository for that reason):

- a new model: its whole folder (config.pbtxt and `<version>/`) is assembled under
  `.staging` and renamed to `<repo>/<name>` in one step;
- a new version of a model on disk: the new config, if any, is first written next
  to the old one as `.pending-<version>.pbtxt`; renaming the staged version folder
  to `<repo>/<name>/<version>` is the commit point; then the pending config replaces
  config.pbtxt. At start-up, recover() finishes a pending config whose version
  folder exists and drops one whose folder does not;
- a config change: a temporary file, then os.replace;
- removal: the model folder is renamed into `.staging` (gone at once), then deleted.

Files are fsynced before the rename that publishes them, and folders after it.
Blocking: call these from a worker thread.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from google.protobuf import text_format

from infergate.gateway.core.repository import CONFIG_FILE, parse_config, version_folders
from infergate.gateway.core.upload import STAGING_DIR, ArtifactSpec, sha256_file
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import AlreadyExists, InvalidInput, shown

_PENDING = re.compile(r"\.pending-([0-9]+)\.pbtxt")
_TEMP_PREFIX = ".tmp-"
# Triton's versions are positive 64-bit numbers; one spelling per number, so that
# "01" and "1" never name two folders of the same version.
_VERSION = re.compile(r"[1-9][0-9]{0,17}")
_HEADER = "# Written by infergate (admin RPC); edits are kept, but comments are not.\n"


def check_version(version: str) -> None:
    if not _VERSION.fullmatch(version):
        raise InvalidInput(
            f"version {shown(version)} is not allowed: use a positive decimal number without "
            "leading zeros, or leave it empty for the next one"
        )


def next_version(model_folder: Path) -> str:
    versions = version_folders(model_folder)
    return str(int(versions[-1]) + 1) if versions else "1"


def read_config(model_folder: Path) -> mc.ModelConfig | None:
    path = model_folder / CONFIG_FILE
    if not path.is_file():
        return None
    return parse_config(path.read_text(), str(path))


def write_config(model_folder: Path, config: mc.ModelConfig) -> None:
    """Replace the model's config.pbtxt atomically."""
    _write_atomic(model_folder, CONFIG_FILE, config)
    _fsync_dir(model_folder)


def commit_version(
    repository: Path, name: str, version: str, staged: Path, config: mc.ModelConfig | None
) -> None:
    """Move a staged, verified version folder into the repository (see the module doc).

    `config` replaces the model's config.pbtxt; None keeps the present one.
    """
    folder = repository / name
    target = folder / version
    if not folder.exists():
        assembled = Path(tempfile.mkdtemp(prefix="model-", dir=repository / STAGING_DIR))
        if config is not None:
            _write_atomic(assembled, CONFIG_FILE, config)
        staged.rename(assembled / version)
        _fsync_dir(assembled)
        assembled.rename(folder)  # the commit point
        _fsync_dir(repository)
        return
    if target.exists():
        raise AlreadyExists(f"model {shown(name)} already has a version {version}")
    pending = None
    if config is not None:
        pending = _write_atomic(folder, f".pending-{version}.pbtxt", config)
    staged.rename(target)  # the commit point
    if pending is not None:
        pending.replace(folder / CONFIG_FILE)
    _fsync_dir(folder)


def remove_model(repository: Path, name: str) -> None:
    """Delete a model's folder; it disappears from the repository in one rename."""
    folder = repository / name
    staging = repository / STAGING_DIR
    staging.mkdir(exist_ok=True)
    doomed = Path(tempfile.mkdtemp(prefix="removed-", dir=staging))
    folder.rename(doomed / name)
    _fsync_dir(repository)
    shutil.rmtree(doomed, ignore_errors=True)


def recover(repository: Path) -> list[str]:
    """Undo or finish what a crash interrupted; returns what it did, for the log."""
    done: list[str] = []
    if not repository.is_dir():
        return done
    staging = repository / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
        done.append(f"deleted unfinished uploads in {staging}")
    for folder in sorted(p for p in repository.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        for path in sorted(folder.iterdir()):
            pending = _PENDING.fullmatch(path.name)
            if pending and (folder / pending.group(1)).is_dir():
                path.replace(folder / CONFIG_FILE)
                done.append(f"{folder.name}: finished the config of version {pending.group(1)}")
            elif pending or path.name.startswith(_TEMP_PREFIX):
                path.unlink(missing_ok=True)
                done.append(f"{folder.name}: deleted {path.name} of an unfinished write")
    return done


def list_artifacts(version_dir: Path) -> list[ArtifactSpec]:
    """The files of a version folder with their sizes and SHA-256 (reads every byte)."""
    if not version_dir.is_dir():
        return []
    return [
        ArtifactSpec(p.name, sha256_file(p), p.stat().st_size)
        for p in sorted(version_dir.iterdir())
        if p.is_file()
    ]


def format_config(config: mc.ModelConfig) -> str:
    return _HEADER + text_format.MessageToString(config)


def _write_atomic(folder: Path, filename: str, config: mc.ModelConfig) -> Path:
    fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(format_config(config))
            f.flush()
            os.fsync(f.fileno())
        return Path(temp).replace(folder / filename)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
