"""Which models exist, in what state, and which version answers a request."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
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

    def set_ready(
        self, model: ModelVersion, keep: Callable[[list[str]], list[str]] | None = None
    ) -> list[ModelVersion]:
        """Serve this version; returns the versions it replaced.

        `keep` picks, from the versions then serving (this one included), those that
        go on serving (the model's version_policy); by default only this one. A
        version the policy leaves out still serves when it is the one just made
        ready: it was asked for. The newest serving version answers requests that
        name none.
        """
        entry = self._models.setdefault(model.name, ModelEntry(model.name))
        candidates = sorted({*entry.versions, model.version}, key=version_key)
        kept = set(keep(candidates) if keep is not None else ()) | {model.version}
        replaced = [
            v
            for k, v in entry.versions.items()
            if k not in kept or (k == model.version and v is not model)
        ]
        versions = {k: v for k, v in entry.versions.items() if k in kept and k != model.version}
        versions[model.version] = model
        entry.versions = dict(sorted(versions.items(), key=lambda kv: version_key(kv[0])))
        entry.latest = next(reversed(entry.versions))
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
