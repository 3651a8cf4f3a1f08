"""What one model looks like in a shared repository right now, and a digest of it.

Replicas that share a repository folder (a ReadWriteMany volume) follow each
other's changes by comparing what is on disk with what they serve
(infergate.gateway.core.replica_registry). A `DiskModel` is that reading: whether
the folder is there, its config.pbtxt (bytes and parsed), its version folders and
each one's files (name, size, modification time), and a digest of all of it. Two
readings with the same digest describe the same repository state: nothing to do.
Sizes and modification times stand for the bytes (a version folder is written
once, by a rename; the same name and version registered again after an
unregistration has new files with new times), so reading is a few stat calls,
never hashing a large model.

Also here: recovery for a repository several replicas write to (`recover_shared`).
Blocking: call these from a worker thread.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infergate.gateway.core.repository import (
    CONFIG_FILE,
    is_valid_model_name,
    list_models,
    parse_config,
    version_folders,
)
from infergate.gateway.core.upload import STAGING_DIR
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import GatewayError

# (file name, size, modification time in ns) of each file in a version folder.
FileStats = tuple[tuple[str, int, int], ...]

# What store.py leaves while it writes (its module doc: the commit protocol).
_PENDING = re.compile(r"\.pending-([0-9]+)\.pbtxt")
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class DiskModel:
    name: str
    present: bool  # the model's folder exists
    config_text: bytes = b""
    config: mc.ModelConfig | None = None  # None: no config.pbtxt, or unreadable (`error`)
    versions: tuple[str, ...] = ()  # version folders, oldest first
    files: Mapping[str, FileStats] = field(default_factory=dict)
    error: str = ""
    digest: str = ""


def read_model(repository: Path, name: str) -> DiskModel:
    """One model's state in the repository (absent if its folder is not there)."""
    folder = repository / name
    if not is_valid_model_name(name) or not folder.is_dir():
        return DiskModel(name, present=False, digest=_digest(name, False, b"", {}))
    config_path = folder / CONFIG_FILE
    try:
        config_text = config_path.read_bytes()
    except FileNotFoundError:
        config_text = b""
    config: mc.ModelConfig | None = None
    error = ""
    if config_text:
        try:
            config = parse_config(config_text.decode("utf-8", "replace"), str(config_path))
        except GatewayError as exc:
            error = str(exc)
    versions = tuple(version_folders(folder))
    files = {v: _file_stats(folder / v) for v in versions}
    return DiskModel(
        name,
        present=True,
        config_text=config_text,
        config=config,
        versions=versions,
        files=files,
        error=error,
        digest=_digest(name, True, config_text, files),
    )


def read_repository(repository: Path) -> dict[str, DiskModel]:
    """Every model folder in the repository, read as `read_model` does."""
    return {name: read_model(repository, name) for name in list_models(repository)}


def recover_shared(
    repository: Path, *, stale_upload_s: float = 3600.0, stale_write_s: float = 60.0
) -> list[str]:
    """Recovery at start-up (as store.recover) for a repository other replicas use too.

    store.recover deletes everything in `.staging` and every pending config: right
    for a gateway alone, wrong when another replica is uploading or committing at
    that moment. Here only leftovers older than a live operation can be are
    touched: uploads untouched for `stale_upload_s` (an upload in progress writes
    its files as bytes arrive), and pending or temporary config files older than
    `stale_write_s` (a commit holds them for milliseconds). Returns what it did.
    """
    done: list[str] = []
    if not repository.is_dir():
        return done
    now = time.time()
    staging = repository / STAGING_DIR
    if staging.is_dir():
        for entry in sorted(staging.iterdir()):
            if now - _newest_mtime(entry) >= stale_upload_s:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                done.append(f"deleted the abandoned upload {entry.name} in {staging}")
    for folder in sorted(p for p in repository.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        for path in sorted(folder.iterdir()):
            pending = _PENDING.fullmatch(path.name)
            if not pending and not path.name.startswith(_TEMP_PREFIX):
                continue
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue  # its commit finished meanwhile
            if age < stale_write_s:
                continue
            if pending and (folder / pending.group(1)).is_dir():
                path.replace(folder / CONFIG_FILE)
                done.append(f"{folder.name}: finished the config of version {pending.group(1)}")
            else:
                path.unlink(missing_ok=True)
                done.append(f"{folder.name}: deleted {path.name} of an unfinished write")
    return done


def _file_stats(version_dir: Path) -> FileStats:
    stats = []
    try:
        entries = sorted(version_dir.iterdir())
    except FileNotFoundError:
        return ()
    for path in entries:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        stats.append((path.name, st.st_size, st.st_mtime_ns))
    return tuple(stats)


def _digest(name: str, present: bool, config_text: bytes, files: Mapping[str, FileStats]) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(name.encode())
    h.update(b"\x01" if present else b"\x00")
    h.update(len(config_text).to_bytes(8, "little"))
    h.update(config_text)
    for version in sorted(files, key=lambda v: (len(v), v)):
        h.update(f"\x00{version}".encode())
        for filename, size, mtime_ns in files[version]:
            h.update(f"\x01{filename}\x02{size}\x03{mtime_ns}".encode())
    return h.hexdigest()


def _newest_mtime(path: Path) -> float:
    try:
        newest = path.stat().st_mtime
    except FileNotFoundError:
        return time.time()  # gone meanwhile: not stale
    if path.is_dir():
        for child in path.rglob("*"):
            try:
                newest = max(newest, child.stat().st_mtime)
            except FileNotFoundError:
                continue
    return newest
