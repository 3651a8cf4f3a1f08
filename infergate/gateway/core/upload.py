"""Receiving a model version's artifacts: safe names, bounded sizes, verified SHA-256.

Bytes land in a private folder under `<repo>/.staging/` (the repository's own
filesystem, so the finished folder can later be renamed into place atomically) and
are hashed as they arrive. Nothing here is visible to the repository reader: it
skips dot-folders, and start-up deletes whatever a crash left in `.staging`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from infergate.gateway.core.repository import CONFIG_FILE
from infergate.schema.errors import (
    ArtifactTooLarge,
    ChecksumMismatch,
    InvalidInput,
    shown,
    shown_list,
)

STAGING_DIR = ".staging"
# A version is a handful of files (model.onnx, model.tflite, model.xml + model.bin,
# external weights); the bound keeps one call from holding many open files.
MAX_ARTIFACTS = 16
# A plain file name: no folders, no leading dot, nothing a shell or a path join
# could read as anything but a name.
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ArtifactSpec:
    filename: str
    sha256: str  # lowercase hex
    size: int  # bytes


def check_filename(filename: str) -> None:
    if not _FILENAME.fullmatch(filename) or ".." in filename:
        raise InvalidInput(
            f"artifact name {shown(filename)} is not allowed: use a plain file name such as "
            "'model.onnx' (letters, digits, '_', '-', '.'; no folders, no '..')"
        )
    if filename == CONFIG_FILE:
        raise InvalidInput(f"'{CONFIG_FILE}' is not an artifact: send the config in the header")


def check_artifacts(artifacts: Sequence[ArtifactSpec], max_bytes: int) -> None:
    """Refuse a registration by its announced artifacts, before any byte is received."""
    if not artifacts:
        raise InvalidInput("a registration needs at least one artifact (e.g. model.onnx)")
    if len(artifacts) > MAX_ARTIFACTS:
        raise InvalidInput(f"{len(artifacts)} artifacts announced; at most {MAX_ARTIFACTS}")
    seen: set[str] = set()
    for artifact in artifacts:
        check_filename(artifact.filename)
        if artifact.filename in seen:
            raise InvalidInput(f"artifact {shown(artifact.filename)} is announced twice")
        seen.add(artifact.filename)
        if not _SHA256.fullmatch(artifact.sha256):
            raise InvalidInput(
                f"artifact {shown(artifact.filename)}: sha256 must be 64 lowercase hex digits"
            )
        if artifact.size < 0:
            raise InvalidInput(f"artifact {shown(artifact.filename)}: negative size")
        if artifact.size > max_bytes:
            raise ArtifactTooLarge(
                f"artifact {shown(artifact.filename)} is {_mb(artifact.size)}; this gateway "
                f"accepts at most {_mb(max_bytes)} per artifact (--max-artifact-mb)"
            )


@dataclass
class _Receiving:
    spec: ArtifactSpec
    path: Path
    file: BinaryIO | None = None
    received: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


class StagedUpload:
    """One registration's artifacts in a staging folder of their own.

    Blocking file I/O: call write() and finish() from a worker thread. Always call
    discard() at the end; after the folder was moved into the repository it has
    nothing left to delete.
    """

    def __init__(self, folder: Path, artifacts: Sequence[ArtifactSpec]) -> None:
        self.folder = folder
        self._files = {a.filename: _Receiving(a, folder / a.filename) for a in artifacts}

    @classmethod
    def create(cls, repository: Path, artifacts: Sequence[ArtifactSpec]) -> StagedUpload:
        staging = repository / STAGING_DIR
        staging.mkdir(exist_ok=True)
        return cls(Path(tempfile.mkdtemp(prefix="upload-", dir=staging)), artifacts)

    def write(self, filename: str, data: bytes) -> None:
        receiving = self._files.get(filename)
        if receiving is None:
            raise InvalidInput(
                f"a chunk for {shown(filename)}, which the header did not announce "
                f"(announced: {shown_list(sorted(self._files), each=shown)})"
            )
        size = receiving.spec.size
        if receiving.received + len(data) > size:
            raise InvalidInput(
                f"artifact {shown(filename)}: more bytes than the {size} announced in the header"
            )
        if receiving.file is None:
            receiving.file = receiving.path.open("xb")
        receiving.file.write(data)
        receiving.digest.update(data)
        receiving.received += len(data)

    def finish(self) -> Path:
        """Check every artifact is complete and intact, flush it to disk; the folder."""
        for name, receiving in self._files.items():
            spec = receiving.spec
            if receiving.received != spec.size:
                raise InvalidInput(
                    f"artifact {shown(name)}: the upload ended after {receiving.received} of "
                    f"{spec.size} bytes"
                )
            actual = receiving.digest.hexdigest()
            if actual != spec.sha256:
                raise ChecksumMismatch(
                    f"artifact {shown(name)}: SHA-256 of the bytes received is {actual}, the "
                    f"header announced {spec.sha256}; the upload was corrupted, or the file "
                    "changed while it was sent"
                )
            if receiving.file is None:  # an empty artifact gets no chunk
                receiving.file = receiving.path.open("xb")
            receiving.file.flush()
            # Durable before the folder is renamed into the repository: a crash after
            # the rename must not leave a version whose files are empty.
            os.fsync(receiving.file.fileno())
            receiving.file.close()
        return self.folder

    def discard(self) -> None:
        for receiving in self._files.values():
            if receiving.file is not None and not receiving.file.closed:
                receiving.file.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
