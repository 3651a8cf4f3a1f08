"""Variants on disk, beside the fp32 artifact, written atomically and read back.

Layout, inside a model version folder:

    <repo>/<model>/<version>/model.onnx             the fp32 artifact(s), untouched
    <repo>/<model>/<version>/variants/
        onnxruntime.int8-dynamic/model.onnx       the variant's artifact
        onnxruntime.int8-dynamic/gate.json        how it was built and judged
        openvino.int8/model.xml, model.bin, gate.json
        openvino.bf16/model.onnx (a hard link to the fp32 file), gate.json
        tflite.fp16/model.tflite, gate.json
        onnxruntime.int8-static/gate.json         rejected: its figures, no artifact

A variant is built in `variants/.tmp-<name>-<pid>-<random>/`, every file fsynced,
then renamed into place (a rebuild first moves the old folder aside), so a reader
sees the old variant, no variant, or the new one, never half of one. `gate.json`
names the artifact, the backend parameters to serve it with (for example
`{"inference_precision": "bf16"}`), the gate's thresholds, figures and verdict, and
the SHA-256 of the fp32 source it was made from: `list_variants` marks a variant
whose source has changed since as stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infergate.backends.base import BackendOptions

log = logging.getLogger(__name__)

VARIANTS_DIR = "variants"
GATE_FILE = "gate.json"
FORMAT = 1
_STAGING = ".tmp-"
_RETIRED = ".old-"


@dataclass(frozen=True)
class StoredVariant:
    """A variant as it lies in the repository; the loader turns admitted ones into arms."""

    backend: str
    variant: str
    folder: Path
    artifact: Path | None  # None when rejected: only its figures were kept
    parameters: Mapping[str, str]  # BackendOptions.extra to serve it with
    admitted: bool
    stale: bool  # its fp32 source changed after it was built: do not serve
    record: Mapping[str, Any]  # gate.json as read

    @property
    def name(self) -> str:
        return f"{self.backend}.{self.variant}"

    @property
    def servable(self) -> bool:
        return self.admitted and not self.stale and self.artifact is not None

    @property
    def figures(self) -> Mapping[str, Any]:
        return dict(self.record.get("figures") or {})

    def options(self, base: BackendOptions) -> BackendOptions:
        """The serving options: the model's own, with this variant's parameters on top."""
        return dataclasses.replace(base, extra={**base.extra, **self.parameters})


def folder_name(backend: str, variant: str) -> str:
    return f"{backend}.{variant}"


def variants_dir(version_dir: Path) -> Path:
    return version_dir / VARIANTS_DIR


class Staging:
    """A variant's temporary folder; `commit` moves it into place atomically."""

    def __init__(self, version_dir: Path, backend: str, variant: str) -> None:
        self.version_dir = version_dir
        self.backend = backend
        self.variant = variant
        parent = variants_dir(version_dir)
        parent.mkdir(parents=True, exist_ok=True)
        name = folder_name(backend, variant)
        self.path = parent / f"{_STAGING}{name}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path.mkdir()
        self.final = parent / name
        self.committed: StoredVariant | None = None

    def commit(self, record: Mapping[str, Any]) -> StoredVariant:
        """Write gate.json, fsync everything, rename into place; returns what was stored."""
        _write_json(self.path / GATE_FILE, record)
        for path in sorted(self.path.rglob("*")):
            if path.is_file():
                _fsync_file(path)
        _fsync_dir(self.path)
        retired: Path | None = None
        if self.final.exists():
            retired = self.final.with_name(
                f"{_RETIRED}{self.final.name}-{os.getpid()}-{secrets.token_hex(4)}"
            )
            self.final.rename(retired)
        self.path.rename(self.final)
        _fsync_dir(self.final.parent)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
        stored = _read(self.final, None)  # its source was hashed moments ago
        assert stored is not None
        self.committed = stored
        return stored

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def staging(version_dir: Path, backend: str, variant: str) -> Iterator[Staging]:
    """A Staging folder that is removed unless committed (also on any exception)."""
    stage = Staging(version_dir, backend, variant)
    try:
        yield stage
    finally:
        if stage.committed is None:
            stage.discard()


def list_variants(version_dir: Path, check_sources: bool = True) -> list[StoredVariant]:
    """Every variant stored for this version (admitted or not), sorted by name.

    With `check_sources`, each variant's fp32 source is hashed again (each file once)
    to mark stale ones. Folders being written, and unreadable records, are skipped
    (the latter with a warning).
    """
    parent = variants_dir(version_dir)
    if not parent.is_dir():
        return []
    hashes: dict[str, str] | None = {} if check_sources else None
    found = []
    for folder in sorted(parent.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        stored = _read(folder, hashes)
        if stored is not None:
            found.append(stored)
    return found


def servable_variants(version_dir: Path, backend: str | None = None) -> list[StoredVariant]:
    """The variants to load as arms: admitted, not stale, artifact present."""
    return [
        v
        for v in list_variants(version_dir)
        if v.servable and (backend is None or v.backend == backend)
    ]


def remove_variant(version_dir: Path, backend: str, variant: str) -> bool:
    """Delete a stored variant (moved aside first, so readers never see half of it)."""
    final = variants_dir(version_dir) / folder_name(backend, variant)
    if not final.is_dir():
        return False
    retired = final.with_name(f"{_RETIRED}{final.name}-{os.getpid()}-{secrets.token_hex(4)}")
    final.rename(retired)
    _fsync_dir(final.parent)
    shutil.rmtree(retired, ignore_errors=True)
    return True


def clean_leftovers(version_dir: Path) -> list[Path]:
    """Remove staging and retired folders whose writing process is gone (a crash)."""
    parent = variants_dir(version_dir)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for folder in parent.iterdir():
        if not folder.name.startswith((_STAGING, _RETIRED)):
            continue
        try:
            pid = int(folder.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def fingerprint(version_dir: Path, paths: Iterable[Path]) -> dict[str, Any]:
    """What a variant was made from: each file (relative to the version folder), its
    size and SHA-256; a folder (a SavedModel) counts as all the files in it."""
    files = []
    for path in paths:
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for member in members:
            files.append(
                {
                    "file": member.relative_to(version_dir).as_posix(),
                    "bytes": member.stat().st_size,
                    "sha256": _sha256(member),
                }
            )
    return {"files": files}


def _read(folder: Path, hashes: dict[str, str] | None) -> StoredVariant | None:
    try:
        record = json.loads((folder / GATE_FILE).read_text())
        backend, variant = str(record["backend"]), str(record["variant"])
        admitted = bool(record["admitted"])
        artifact_name = record.get("artifact")
        parameters = {str(k): str(v) for k, v in dict(record.get("parameters") or {}).items()}
        if int(record.get("format", 0)) != FORMAT:
            raise ValueError(f"format {record.get('format')}, this reader knows {FORMAT}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("variant %s: unreadable %s, skipped: %s", folder, GATE_FILE, exc)
        return None
    artifact = folder / str(artifact_name) if artifact_name else None
    if artifact is not None and not artifact.is_file():
        log.warning("variant %s: its artifact %s is missing", folder, artifact_name)
        artifact = None
    stale = False
    if hashes is not None:
        version_dir = folder.parent.parent
        for entry in (record.get("source") or {}).get("files", []):
            path = version_dir / str(entry.get("file", ""))
            key = str(path)
            if key not in hashes:
                hashes[key] = _sha256(path) if path.is_file() else ""
            if hashes[key] != entry.get("sha256"):
                stale = True
    return StoredVariant(backend, variant, folder, artifact, parameters, admitted, stale, record)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def jsonable(value: Any) -> Any:
    """`value` with every NaN or infinite float made None (JSON has no such numbers),
    tuples made lists and paths made strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(path: Path, record: Mapping[str, Any]) -> None:
    text = json.dumps(jsonable(record), indent=2, sort_keys=True, allow_nan=False)
    with path.open("w") as out:
        out.write(text + "\n")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
