"""Model control while the gateway runs: register, reload, reconfigure, unregister, inspect.

The admin RPC and Triton's RepositoryModelLoad/Unload both land here. Every change
is written to the model repository (infergate.gateway.core.store) before traffic
moves, so a restart serves exactly the changes that completed. Calls on one model
name run one at a time; calls on different models run side by side.

Replicas sharing the repository coordinate through a ChangeCoordinator
(infergate.gateway.core.replica_registry): it excludes other replicas' changes of
the same model for the duration of one, and is told of each change once it is
written and serving, so that the others follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from infergate.gateway.core import live_config, store
from infergate.gateway.core.lifecycle import ModelLifecycle
from infergate.gateway.core.model import ModelVersion
from infergate.gateway.core.registry import ModelState
from infergate.gateway.core.repository import (
    ModelSource,
    is_valid_model_name,
    list_models,
    version_folders,
)
from infergate.gateway.core.upload import ArtifactSpec, StagedUpload, check_artifacts
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import (
    AlreadyExists,
    GatewayError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PreconditionFailed,
    shown,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# (filename, bytes): the next piece of one artifact.
Chunks = AsyncIterator[tuple[str, bytes]]


@dataclass(frozen=True)
class Registration:
    name: str
    config: mc.ModelConfig | None  # None: keep the model's config.pbtxt (or derive one)
    version: str  # "": the next number
    artifacts: tuple[ArtifactSpec, ...]


@dataclass(frozen=True)
class Registered:
    model: ModelVersion
    load_s: float
    replaced: tuple[str, ...]


@dataclass(frozen=True)
class Unregistered:
    versions: tuple[str, ...]
    files_removed: bool


@dataclass(frozen=True)
class ModelView:
    """A model as the registry and the repository see it."""

    name: str
    state: str
    reason: str
    serving: tuple[ModelVersion, ...]
    on_disk: tuple[str, ...]  # version folders, oldest first
    disk_config: mc.ModelConfig | None


class ChangeCoordinator(Protocol):
    """What model changes need when several replicas share the repository."""

    def exclusive(self, name: str) -> AbstractAsyncContextManager[None]:
        """Held around one change of model `name`: no other replica changes it meanwhile."""
        ...

    async def changed(self, name: str, action: str, version: str = "") -> None:
        """Model `name` changed (registered, reloaded, updated, unregistered, unloaded),
        in the repository and here; called while `exclusive` is held. Never raises."""
        ...


class ModelControl:
    def __init__(
        self, lifecycle: ModelLifecycle, repository: Path | None, max_artifact_bytes: int
    ) -> None:
        self.lifecycle = lifecycle
        self.registry = lifecycle.registry
        self.repository = repository
        self.max_artifact_bytes = max_artifact_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        self._changes: set[asyncio.Task[Any]] = set()
        # Set by the server when replicas follow a shared registry.
        self.coordinator: ChangeCoordinator | None = None

    # ---- changes --------------------------------------------------------------------

    async def register(self, registration: Registration, chunks: Chunks) -> Registered:
        """Receive, verify, load and warm up a version, write it, then serve it."""
        repository = self._require_repository()
        name = registration.name
        _check_name(name)
        if registration.version:
            store.check_version(registration.version)
        check_artifacts(registration.artifacts, self.max_artifact_bytes)
        config = _named_config(registration.config, name)
        if registration.version:  # refuse before the bytes travel; checked again below
            _check_new_version(repository / name, name, registration.version)
        upload = await asyncio.to_thread(StagedUpload.create, repository, registration.artifacts)
        try:
            async for filename, data in chunks:
                await asyncio.to_thread(upload.write, filename, data)
            await asyncio.to_thread(upload.finish)
        except BaseException:
            await asyncio.to_thread(upload.discard)
            raise
        # Every byte is in and verified: from here on it completes even if the caller
        # goes away.
        return await self._to_completion(self._install(repository, registration, config, upload))

    async def _install(
        self,
        repository: Path,
        registration: Registration,
        config: mc.ModelConfig | None,
        upload: StagedUpload,
    ) -> Registered:
        try:
            async with self._changing(registration.name):
                done = await self._install_version(repository, registration, config, upload.folder)
                await self._announce(registration.name, "registered", done.model.version)
                return done
        finally:
            await asyncio.to_thread(upload.discard)  # nothing left to delete once committed

    async def _install_version(
        self,
        repository: Path,
        registration: Registration,
        config: mc.ModelConfig | None,
        staged: Path,
    ) -> Registered:
        name = registration.name
        folder = repository / name
        version = registration.version or await asyncio.to_thread(store.next_version, folder)
        _check_new_version(folder, name, version)
        load_config = config
        if load_config is None:
            load_config = await asyncio.to_thread(store.read_config, folder)
        started = time.monotonic()
        model = await self.lifecycle.load(
            ModelSource(name, staged.parent, load_config, version, staged)
        )
        load_s = time.monotonic() - started
        try:
            await asyncio.to_thread(store.commit_version, repository, name, version, staged, config)
        except BaseException:
            await model.aclose(drain=False)
            raise
        replaced = self._serving_versions(name)
        self.lifecycle.serve(model)
        log.info("registered model %s version %s (%.0f ms to load)", name, version, load_s * 1e3)
        return Registered(model, load_s, tuple(v for v in replaced if v != version))

    async def reload(self, name: str, config: mc.ModelConfig | None = None) -> ModelVersion:
        """(Re)load a model from the repository (the versions its version_policy
        serves), with a new config if given; returns the newest."""
        repository = self._require_repository()
        _check_name(name)
        return await self._to_completion(
            self._reload(repository, name, _named_config(config, name))
        )

    async def _reload(
        self, repository: Path, name: str, config: mc.ModelConfig | None
    ) -> ModelVersion:
        async with self._changing(name):
            if not (repository / name).is_dir():
                raise ModelNotFound(f"model {shown(name)} is not in the repository {repository}")
            versions = await self.lifecycle.load_from_repository(repository, name, config)
            if config is not None:
                try:
                    await asyncio.to_thread(store.write_config, repository / name, config)
                except BaseException:
                    for model in versions:
                        await model.aclose(drain=False)
                    raise
            serving = self._serving_versions(name)
            for model in versions:
                self.lifecycle.serve(model)
                if model.version in serving:  # its files may have changed under the same number
                    await self.lifecycle.forget_answers(name, model.version)
            log.info(
                "loaded model %s versions %s from the repository",
                name,
                ", ".join(m.version for m in versions),
            )
            await self._announce(name, "reloaded")
            return versions[-1]

    async def update_config(
        self, name: str, update: mc.ModelConfig, paths: list[str]
    ) -> mc.ModelConfig:
        """Apply batching / cache / routing changes live, and persist them."""
        _check_name(name)
        return await self._to_completion(self._update(name, update, paths))

    async def _update(self, name: str, update: mc.ModelConfig, paths: list[str]) -> mc.ModelConfig:
        async with self._changing(name):
            serving = self._serving(name)
            # Validate every version's change before touching any of them.
            changes = [(m, live_config.apply_update(m.config, update, paths)) for m in serving]
            previous = [(m, _copy(m.config)) for m in serving]
            try:
                for model, config in changes:
                    self.lifecycle.reconfigure(model, config)
                await asyncio.to_thread(self._persist_update, name, update, paths)
            except BaseException:
                # Live and on-disk settings must not part ways: undo what was applied.
                for model, config in previous:
                    self.lifecycle.reconfigure(model, config)
                raise
            log.info("model %s: updated %s live", name, ", ".join(paths))
            await self._announce(name, "updated")
            return _copy(serving[-1].config)

    def _persist_update(self, name: str, update: mc.ModelConfig, paths: list[str]) -> None:
        if self.repository is None or not (self.repository / name).is_dir():
            return  # nothing on disk to keep in step
        folder = self.repository / name
        # The change goes onto the file as it is, not the loaded config: fields the
        # loader derived (tensors, backend) stay derived after a restart.
        on_disk = store.read_config(folder) or mc.ModelConfig(name=name)
        live_config.merge(update, on_disk, paths)
        store.write_config(folder, on_disk)

    async def unregister(self, name: str, keep_files: bool = False) -> Unregistered:
        """Stop new requests, finish the queued ones, free the model, remove its files."""
        _check_name(name)
        return await self._to_completion(self._unregister(name, keep_files))

    async def _unregister(self, name: str, keep_files: bool) -> Unregistered:
        async with self._changing(name):
            folder = self.repository / name if self.repository is not None else None
            on_disk = folder is not None and folder.is_dir()
            if name not in self.registry and not on_disk:
                raise ModelNotFound(f"model {shown(name)} is not known to this gateway")
            versions = await self.lifecycle.unload(name, drain=True)
            removed = False
            if on_disk and not keep_files:
                assert self.repository is not None
                await asyncio.to_thread(store.remove_model, self.repository, name)
                removed = True
                # The same name and versions may come back with other files.
                await self.lifecycle.forget_answers(name)
            log.info("unregistered model %s%s", name, " (files removed)" if removed else "")
            await self._announce(name, "unloaded" if on_disk and keep_files else "unregistered")
            return Unregistered(tuple(v.version for v in versions), removed)

    # ---- inspection ------------------------------------------------------------------

    async def models(self) -> list[ModelView]:
        names = {entry.name for entry in self.registry}
        if self.repository is not None:
            names.update(await asyncio.to_thread(list_models, self.repository))
        return [await self._view(name, read_config=False) for name in sorted(names)]

    async def describe(self, name: str) -> tuple[ModelView, dict[str, list[ArtifactSpec]]]:
        """The model, and the files of each version on disk (with their SHA-256)."""
        _check_name(name)
        view = await self._view(name, read_config=True)
        if view.state == _UNKNOWN:
            raise ModelNotFound(f"model {shown(name)} is not known to this gateway")
        artifacts: dict[str, list[ArtifactSpec]] = {}
        if self.repository is not None:
            folder = self.repository / name
            for version in view.on_disk:
                artifacts[version] = await asyncio.to_thread(store.list_artifacts, folder / version)
        return view, artifacts

    async def _view(self, name: str, read_config: bool) -> ModelView:
        serving: tuple[ModelVersion, ...] = ()
        state, reason = _UNKNOWN, ""
        if name in self.registry:
            entry = self.registry.entry(name)
            state, reason = entry.state.value, entry.reason
            serving = tuple(entry.versions.values())
        on_disk: tuple[str, ...] = ()
        disk_config = None
        if self.repository is not None:
            folder = self.repository / name
            on_disk = tuple(await asyncio.to_thread(version_folders, folder))
            if read_config:
                try:
                    disk_config = await asyncio.to_thread(store.read_config, folder)
                except GatewayError as exc:
                    reason = reason or str(exc)
            if on_disk and state == _UNKNOWN:
                state = ModelState.UNAVAILABLE.value
                reason = "in the repository but not loaded (RepositoryModelLoad loads it)"
        return ModelView(name, state, reason, serving, on_disk, disk_config)

    # ---- helpers -----------------------------------------------------------------------

    async def _to_completion(self, change: Coroutine[Any, Any, T]) -> T:
        """Run a change to its end even if the caller goes away meanwhile.

        Half a change would leave the repository and the served models disagreeing
        (a version committed to disk while the old one still serves), so the change
        runs as a task of its own, and a caller that leaves only stops waiting.
        """
        task = asyncio.get_running_loop().create_task(change)
        self._changes.add(task)
        task.add_done_callback(self._forget)
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._changes.discard(task)
        if not task.cancelled():
            task.exception()  # its caller had the error, or left: either way, handled

    async def aclose(self) -> None:
        """Let the changes in progress finish (before the lifecycle frees the models)."""
        await asyncio.gather(*self._changes, return_exceptions=True)

    def _require_repository(self) -> Path:
        if self.repository is None:
            raise PreconditionFailed(
                "this gateway has no model repository to keep registered models in; "
                "start it with --model-repository FOLDER"
            )
        return self.repository

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def local_lock(self, name: str) -> asyncio.Lock:
        """This process's lock on model `name`: whoever else changes what serves of it
        (the registry following other replicas) takes it too."""
        return self._lock(name)

    @contextlib.asynccontextmanager
    async def _changing(self, name: str) -> AsyncIterator[None]:
        """One change of `name` at a time: here, and across replicas with a coordinator."""
        async with self._lock(name):
            if self.coordinator is None:
                yield
                return
            async with self.coordinator.exclusive(name):
                yield

    async def _announce(self, name: str, action: str, version: str = "") -> None:
        if self.coordinator is not None:
            await self.coordinator.changed(name, action, version)

    def _serving(self, name: str) -> list[ModelVersion]:
        entry = self.registry.entry(name)
        if entry.state is not ModelState.READY or not entry.versions:
            why = f": {entry.reason}" if entry.reason else ""
            raise ModelNotReady(f"model {shown(name)} is {entry.state.value}{why}")
        return list(entry.versions.values())

    def _serving_versions(self, name: str) -> list[str]:
        if name not in self.registry:
            return []
        return list(self.registry.entry(name).versions)


_UNKNOWN = "UNKNOWN"


def _check_name(name: str) -> None:
    if not is_valid_model_name(name):
        raise InvalidInput(
            f"{shown(name)} is not a valid model name: letters, digits, '_', '-' and '.', starting "
            "with a letter or digit, at most 128 characters, no '..'"
        )


def _check_new_version(folder: Path, name: str, version: str) -> None:
    if (folder / version).exists():
        raise AlreadyExists(
            f"model {shown(name)} already has a version {version}; versions are never "
            "overwritten (cached answers are keyed by version): leave the version "
            "empty for the next one"
        )


def _named_config(config: mc.ModelConfig | None, name: str) -> mc.ModelConfig | None:
    if config is None:
        return None
    if config.name and config.name != name:
        raise InvalidInput(f"the config names model '{config.name}', but this is {shown(name)}")
    named = _copy(config)
    named.name = name
    return named


def _copy(config: mc.ModelConfig) -> mc.ModelConfig:
    copy = mc.ModelConfig()
    copy.CopyFrom(config)
    return copy
