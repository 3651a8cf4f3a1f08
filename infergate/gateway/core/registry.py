"""Which models exist, in what state, and which version answers a request."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.repository import version_key
from infergate.schema.errors import ModelNotFound, ModelNotReady, shown


class ModelState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class ModelEntry:
    name: str
    state: ModelState = ModelState.LOADING
    reason: str = ""
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    # The version a request without a version gets: the newest ready one.
    latest: str = ""


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str


class ModelRegistry:
    def __init__(self) -> None:
        self._models: dict[str, ModelEntry] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(sorted(self._models.values(), key=lambda e: e.name))

    def entry(self, name: str) -> ModelEntry:
        found = self._models.get(name)
        if found is None:
            raise ModelNotFound(f"model {shown(name)} is not known to this gateway")
        return found

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The version that serves a request; raises ModelNotFound / ModelNotReady."""
        entry = self.entry(name)
        if entry.state is not ModelState.READY:
            why = f": {entry.reason}" if entry.reason else ""
            raise ModelNotReady(f"model {shown(name)} is {entry.state.value}{why}")
        wanted = version or entry.latest
        found = entry.versions.get(wanted)
        if found is None:
            raise ModelNotFound(
                f"model {shown(name)} has no version {shown(version)}; ready versions are "
                f"{sorted(entry.versions, key=version_key)}"
            )
        return found

    def set_loading(self, name: str) -> None:
        entry = self._models.setdefault(name, ModelEntry(name))
        if not entry.versions:
            entry.state = ModelState.LOADING

    def set_ready(self, model: ModelVersion) -> list[ModelVersion]:
        # One version serves at a time (Triton's default version policy, latest 1).
        """Serve this version as the model's latest; returns versions it replaced."""
        entry = self._models.setdefault(model.name, ModelEntry(model.name))
        replaced = [v for k, v in entry.versions.items() if k != model.version]
        previous = entry.versions.get(model.version)
        if previous is not None and previous is not model:
            replaced.append(previous)
        entry.versions = {model.version: model}
        entry.latest = model.version
        entry.state = ModelState.READY
        entry.reason = ""
        return replaced

    def set_failed(self, name: str, reason: str) -> None:
        """Record a failed load; a model already serving keeps serving."""
        entry = self._models.setdefault(name, ModelEntry(name))
        if entry.versions:
            entry.reason = f"last load failed: {reason}"
            return
        entry.state = ModelState.UNAVAILABLE
        entry.reason = reason

    def remove(self, name: str) -> list[ModelVersion]:
        entry = self._models.pop(name, None)
        return list(entry.versions.values()) if entry else []

    def index(self) -> list[IndexEntry]:
        rows: list[IndexEntry] = []
        for entry in self:
            versions = sorted(entry.versions, key=version_key) or [""]
            rows.extend(
                IndexEntry(entry.name, v, entry.state.value, entry.reason) for v in versions
            )
        return rows

    def ready_versions(self) -> Iterator[ModelVersion]:
        for entry in self:
            if entry.state is ModelState.READY:
                yield from entry.versions.values()
