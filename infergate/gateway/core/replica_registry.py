"""A model registry every replica follows: one repository, events and locks in Redis.

Replicas share the model repository (one folder; in Kubernetes a ReadWriteMany
volume) and a Redis (`--registry-redis-url`). The repository is the truth about
which models and versions exist; Redis carries who changed what, who may change
what now, and who serves what (docs/scale-out.md, "The registry"):

- **Changes** (ModelControl: register, reload, update, unregister) take the model's
  lock in Redis (redis_lock: a lease, renewed while held) around the local one, so
  two replicas never write one model at once: the second waits, then sees the
  first's result in the repository (a version that exists now: ALREADY_EXISTS).
  Redis unavailable: the change is refused (UNAVAILABLE), never made uncoordinated.
- **Events**: after a change is in the repository and serving here, one entry goes
  to the stream (registry_events). Every other replica's follower task reads the
  stream (a blocking XREAD from its position) and converges on the repository.
- **Converging** on a model: read it from disk (repository_state), compare with what
  was applied last; if only live fields (batching, cache, routing) of the config
  changed, reconfigure in place; if versions or anything else changed, load the
  versions its policy serves and serve them (the old ones drain); if it is gone
  (or unloaded with its files kept), unload it. Level-triggered: an event is only a
  hint to look, so a missed or repeated one does no harm.
- **Resync**: at start, after Redis comes back, and every `--registry-resync-s`, the
  follower converges on every model in the repository and in its registry. That is
  the catch-up for whatever it missed (down, partitioned, Redis restarted empty):
  it reads the stream's last id first, so events after the resync are read.
- **Reports**: each replica keeps its state (stream position, per-model state and
  digest) in Redis under a TTL its heartbeat renews (replica_state), which answers
  "who serves what" and `--wait-replicas`.

Runs on the event loop of the gateway; blocking file reads go to threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from infergate.gateway.core import live_config
from infergate.gateway.core.model_control import ModelControl
from infergate.gateway.core.redis_link import RedisLink, RedisOptions, RedisUnavailable
from infergate.gateway.core.redis_lock import LockBusy, RedisLock
from infergate.gateway.core.registry_events import (
    MAX_EVENTS,
    REGISTERED,
    RELOADED,
    START,
    STREAM,
    UNLOADED,
    UNLOADED_ACTION,
    UNREGISTERED,
    Event,
    decode,
    lock_key,
)
from infergate.gateway.core.replica_state import (
    Expectation,
    ModelReport,
    ReplicaModel,
    ReplicaReport,
    judge,
    model_across,
    publish,
    read_all,
    withdraw,
)
from infergate.gateway.core.repository import is_valid_model_name, list_models
from infergate.gateway.core.repository_state import (
    DiskModel,
    FileStats,
    read_model,
    read_repository,
)
from infergate.gateway.core.version_policy import served_versions
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import (
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    PreconditionFailed,
    Unavailable,
    shown,
)
from infergate.settings import Settings, SettingsError

log = logging.getLogger(__name__)

_REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_WAIT_POLL_S = 0.01  # two Redis round trips a poll


@dataclass(frozen=True)
class RegistryOptions:
    replica_id: str
    heartbeat_s: float = 1.0  # the report is rewritten this often; it lives 3 heartbeats
    resync_s: float = 30.0  # converge on the whole repository this often; 0: never
    lock_lease_s: float = 30.0
    lock_wait_s: float = 120.0  # a change waits this long for another replica's
    block_s: float = 0.5  # one blocking XREAD
    retry_s: float = 0.5  # after Redis failed, before the follower tries again

    @property
    def report_ttl_s(self) -> float:
        return max(3 * self.heartbeat_s, 1.0)


@dataclass(frozen=True)
class _Applied:
    """What a replica last converged a model on: the repository as read, and whether
    it was to be served."""

    disk: DiskModel
    serving: bool


@dataclass(frozen=True)
class _Announced:
    event: str  # the stream id; "" when announcing failed
    action: str
    version: str


class ReplicaRegistry:
    """This replica's part in the shared registry (see the module doc).

    ModelControl calls `exclusive` and `changed` (its ChangeCoordinator); the server
    calls `prepare` before loading the repository, `start` after, `stop` and
    `aclose` when it stops; the admin servicer calls `wait_replicas` and
    `replicas_of`.
    """

    def __init__(self, link: RedisLink, control: ModelControl, options: RegistryOptions) -> None:
        if control.repository is None:
            raise ValueError("the registry needs a model repository")
        if options.heartbeat_s <= 0 or options.resync_s < 0 or options.block_s <= 0:
            raise ValueError("heartbeat_s and block_s must be > 0, resync_s >= 0")
        if options.block_s >= link.options.timeout_s:
            raise ValueError("block_s must be shorter than the link's command timeout")
        self.link = link
        self.control = control
        self.lifecycle = control.lifecycle
        self.registry = control.registry
        self.repository: Path = control.repository
        self.options = options
        self.id = options.replica_id
        self._lock = RedisLock(link, lease_s=options.lock_lease_s)
        self._applied: dict[str, _Applied] = {}
        # Versions this replica has served, with their files: a version number loaded
        # again with other files must not answer from the cache of the old ones.
        self._seen: dict[str, dict[str, FileStats]] = {}
        self._unloaded: set[str] = set()
        self._position = ""  # every event up to here is applied; "": not known yet
        self._announced: dict[str, _Announced] = {}
        self._report_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._behind: set[str] = set()  # models changed here while not in step
        self._catching_up: set[asyncio.Task[None]] = set()
        self._following = False
        # Counts, for tests and logs.
        self.resyncs = 0
        self.events_applied = 0

    # ---- ModelControl's coordinator ---------------------------------------------------

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Hold model `name`'s lock in Redis for one change."""
        try:
            lease = await self._lock.acquire(lock_key(name), self.id, self.options.lock_wait_s)
        except (RedisUnavailable, RedisError) as exc:
            raise Unavailable(
                f"model {shown(name)} cannot be changed now: changes are coordinated with the "
                f"other replicas through Redis, which is unavailable ({exc}); try again"
            ) from None
        except LockBusy as exc:
            raise Unavailable(
                f"model {shown(name)} is being changed by replica {shown(exc.holder)} (waited "
                f"{exc.waited_s:.1f}s for it); try again later"
            ) from None
        async with self._lock.held(lease):
            # Behind on this model (another replica's change not applied here yet):
            # this change then starts from a repository this replica does not serve,
            # so what it applies is not the whole state (changed() sees to it).
            before = await asyncio.to_thread(read_model, self.repository, name)
            if not self._in_step(name, before):
                self._behind.add(name)
            try:
                yield
            finally:
                self._behind.discard(name)

    async def changed(self, name: str, action: str, version: str = "") -> None:
        """A change of `name` is in the repository and serving here: record it as
        applied, and tell the other replicas. Never raises: the change is done."""
        if action == UNLOADED_ACTION:
            self._unloaded.add(name)
        elif action in (REGISTERED, RELOADED, UNREGISTERED):
            self._unloaded.discard(name)
        disk = await asyncio.to_thread(read_model, self.repository, name)
        if name in self._behind:
            # Converge on the whole state once this change lets go of the model.
            task = asyncio.get_running_loop().create_task(self.converge(name))
            self._catching_up.add(task)
            task.add_done_callback(self._catching_up.discard)
        else:
            self._applied[name] = _Applied(disk, self._should_serve(disk))
            self._remember_served(name, disk)
        event = Event(self.id, name, action, version, disk.digest)
        try:
            entry_id = await self.link.call(lambda client: _announce(client, event))
        except (RedisUnavailable, RedisError) as exc:
            log.warning(
                "model %s %s here, but telling the other replicas failed (%s): each finds "
                "it at its next resync (within %.0fs)",
                name,
                action,
                exc,
                self.options.resync_s,
            )
            self._announced[name] = _Announced("", action, version)
        else:
            self._announced[name] = _Announced(entry_id, action, version)
        self._report_now.set()

    # ---- the server's calls -----------------------------------------------------------

    async def prepare(self) -> None:
        """Before the repository loads at start-up: what it holds now is what this
        replica will have applied (a change made while it loads differs from this,
        so the first resync picks it up)."""
        try:
            disks = await asyncio.to_thread(read_repository, self.repository)
        except GatewayError as exc:
            log.warning("registry: cannot read the repository: %s", exc)
            disks = {}
        for name, disk in disks.items():
            self._applied[name] = _Applied(disk, serving=True)

    def start(self) -> None:
        """Follow the registry and report this replica's state, until stop()."""
        for entry in self.registry:
            applied = self._applied.get(entry.name)
            if applied is not None:
                self._remember_served(entry.name, applied.disk)
        loop = asyncio.get_running_loop()
        self._following = True
        self._tasks = [
            loop.create_task(self._follow(), name=f"registry follower {self.id}"),
            loop.create_task(self._heartbeat(), name=f"registry heartbeat {self.id}"),
        ]
        log.info(
            "registry: replica %s follows model changes through Redis at %s",
            self.id,
            self.link.where,
        )

    async def stop(self) -> None:
        """Stop following and reporting (the report expires, or aclose deletes it)."""
        self._following = False
        tasks = {*self._tasks, *self._catching_up}
        # Cancelled again until done: a cancellation that lands while redis-py tears
        # down a connection can come out as a connection error, which the loops take
        # for Redis being away (they also stop once _following is False).
        while tasks:
            for task in tasks:
                task.cancel()
            _, tasks = await asyncio.wait(tasks, timeout=1.0)
        self._tasks = []

    async def aclose(self) -> None:
        await self.stop()
        try:
            await withdraw(self.link, self.id)
        except (RedisUnavailable, RedisError) as exc:
            log.info("registry: could not withdraw this replica's report (%s); it expires", exc)
        await self.link.aclose()

    # ---- following ---------------------------------------------------------------------

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        need_sync, last_sync, connected = True, 0.0, True
        while self._following:
            try:
                resync_due = (
                    self.options.resync_s > 0 and loop.time() - last_sync >= self.options.resync_s
                )
                if need_sync or resync_due:
                    if not connected:
                        # Pooled connections from before an outage (a restarted Redis
                        # closed them) would each fail one change: open fresh ones.
                        await self.link.client.connection_pool.disconnect(inuse_connections=False)
                    await self.resync()
                    need_sync, last_sync = False, loop.time()
                    if not connected:
                        log.info("registry: Redis answers again; caught up from the repository")
                    connected = True
                await self._read_events()
            except asyncio.CancelledError:
                raise
            except (RedisUnavailable, RedisError) as exc:
                if connected:
                    log.warning(
                        "registry: following paused (%s); this replica catches up from the "
                        "repository once Redis answers",
                        exc,
                    )
                connected, need_sync = False, True
                await asyncio.sleep(self.options.retry_s)
            except Exception:
                log.exception("registry: the follower failed; resyncing")
                need_sync = True
                await asyncio.sleep(self.options.retry_s)

    async def resync(self) -> None:
        """Converge on every model: in the repository, serving here, or applied before."""

        async def last_id(client: Redis) -> str:
            entries: Any = await client.xrevrange(STREAM, count=1)
            return _text(entries[0][0]) if entries else START

        async def unloaded(client: Redis) -> set[bytes | str]:
            return await client.smembers(UNLOADED)

        position = await self.link.call(last_id)
        self._unloaded = {_text(n) for n in await self.link.call(unloaded)}
        try:
            on_disk = await asyncio.to_thread(list_models, self.repository)
        except GatewayError as exc:
            # The shared volume is away: unloading everything would be wrong.
            log.error("registry: cannot list the repository (%s); resync skipped", exc)
            return
        names = set(on_disk) | {e.name for e in self.registry} | set(self._applied)
        for name in sorted(names):
            await self.converge(name)
        self._position = position
        self.resyncs += 1
        self._report_now.set()

    async def _read_events(self) -> None:
        position = self._position or START
        block_ms = max(1, round(self.options.block_s * 1000))

        async def read(client: Redis) -> list[tuple[bytes | str, dict[Any, Any]]]:
            found: Any = await client.xread({STREAM: position}, count=100, block=block_ms)
            return [entry for _stream, items in found or [] for entry in items]

        for entry_id, fields in await self.link.call(read):
            event = decode(entry_id, fields)
            if event is not None:
                await self._apply(event)
            self._position = _text(entry_id)
            self._report_now.set()

    async def _apply(self, event: Event) -> None:
        if event.replica == self.id:
            return  # made here, and applied before it was announced
        if event.action == UNLOADED_ACTION:
            self._unloaded.add(event.model)
        elif event.action in (REGISTERED, RELOADED, UNREGISTERED):
            self._unloaded.discard(event.model)
        log.info("registry: %s", event)
        await self.converge(event.model)
        self.events_applied += 1

    async def converge(self, name: str) -> None:
        """Make what this replica serves of `name` match the repository."""
        if not is_valid_model_name(name):
            return
        async with self.control.local_lock(name):
            if not await asyncio.to_thread(self.repository.is_dir):
                log.error(
                    "registry: the repository %s is not there; %s left as it is",
                    self.repository,
                    name,
                )
                return
            disk = await asyncio.to_thread(read_model, self.repository, name)
            serve = self._should_serve(disk)
            before = self._applied.get(name)
            if before is not None and before.serving == serve and before.disk.digest == disk.digest:
                return
            try:
                if serve:
                    await self._serve_from_disk(name, before, disk)
                else:
                    await self._withdraw(name)
            except GatewayError as exc:  # a failed load is recorded in the registry
                log.warning("registry: model %s: %s", name, exc)
            except Exception:
                log.exception("registry: converging on model %s failed", name)
            finally:
                # Recorded even when it failed: the same state is not retried until
                # the repository changes (as a failed load at start-up).
                self._applied[name] = _Applied(disk, serve)
                self._remember_served(name, disk)
                self._report_now.set()

    async def _withdraw(self, name: str) -> None:
        if name not in self.registry:
            return
        versions = await self.lifecycle.unload(name, drain=True)
        log.info(
            "registry: stopped serving model %s (versions %s): gone from the repository or "
            "unloaded by another replica",
            name,
            ", ".join(v.version for v in versions) or "none",
        )

    async def _serve_from_disk(self, name: str, before: _Applied | None, disk: DiskModel) -> None:
        entry = self.registry.entry(name) if name in self.registry else None
        served = dict(entry.versions) if entry is not None else {}
        wanted = served_versions(disk.config, disk.versions)
        if (
            before is not None
            and before.serving
            and served
            and _only_live_fields_changed(before.disk, disk, served, wanted)
        ):
            paths = _changed_live_fields(before.disk.config, disk.config)
            if not paths:
                return
            update = disk.config or mc.ModelConfig(name=name)
            try:
                changes = [
                    (m, live_config.apply_update(m.config, update, paths)) for m in served.values()
                ]
            except InvalidInput as exc:
                log.info("registry: model %s: %s; reloading it instead", name, exc)
            else:
                for model, config in changes:
                    self.lifecycle.reconfigure(model, config)
                log.info("registry: model %s: %s changed live", name, ", ".join(paths))
                return
        if entry is None:
            self.registry.set_loading(name)
        # Every version the policy serves loads again (cheap next to keeping two
        # readers of the repository's config apart); the versions replaced drain.
        models = await self.lifecycle.load_from_repository(self.repository, name)
        seen = self._seen.get(name, {})
        for model in models:
            self.lifecycle.serve(model)
            old_files = seen.get(model.version)
            if model.version in served or (
                old_files is not None and old_files != disk.files.get(model.version)
            ):
                # Same name and version, perhaps other bytes or config: its answers go.
                await self.lifecycle.forget_answers(name, model.version)
        log.info(
            "registry: model %s: serving versions %s from the repository",
            name,
            ", ".join(m.version for m in models),
        )

    def _should_serve(self, disk: DiskModel) -> bool:
        return disk.present and disk.name not in self._unloaded

    def _in_step(self, name: str, disk: DiskModel) -> bool:
        """Whether this replica has applied the repository state `disk` of the model."""
        applied = self._applied.get(name)
        if applied is None:
            return not disk.present  # never seen, and nothing there to have applied
        return applied.disk.digest == disk.digest and applied.serving == self._should_serve(disk)

    def _remember_served(self, name: str, disk: DiskModel) -> None:
        if name not in self.registry:
            return
        seen = self._seen.setdefault(name, {})
        for version in self.registry.entry(name).versions:
            if version in disk.files:
                seen[version] = disk.files[version]

    # ---- reporting -----------------------------------------------------------------------

    def report(self) -> ReplicaReport:
        """This replica's state, as it goes to Redis."""
        models = {}
        for entry in self.registry:
            applied = self._applied.get(entry.name)
            models[entry.name] = ModelReport(
                entry.state.value,
                tuple(entry.versions),
                entry.reason,
                applied.disk.digest if applied is not None else "",
            )
        return ReplicaReport(self.id, self._position, models)

    async def _heartbeat(self) -> None:
        while self._following:
            self._report_now.clear()
            # Redis away: the report expires and this replica is not counted live
            # until it writes again (the link logs the outage).
            with contextlib.suppress(RedisUnavailable, RedisError):
                await publish(self.link, self.report(), self.options.report_ttl_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.heartbeat_s):
                    await self._report_now.wait()
            await asyncio.sleep(0.002)  # a burst of changes becomes one write

    async def reports(self) -> list[ReplicaReport]:
        """Every live replica's report, this one's fresh from memory; only this one's
        when Redis does not answer."""
        own = self.report()
        try:
            others = [r for r in await read_all(self.link) if r.replica != self.id]
        except (RedisUnavailable, RedisError):
            return [own]
        return [own, *others] if self._following else others

    async def replicas_of(self, names: Iterable[str]) -> dict[str, list[ReplicaModel]]:
        """Each model on every live replica (ListModels, DescribeModel)."""
        wanted = [n for n in names if is_valid_model_name(n)]
        reports = await self.reports()

        def read() -> dict[str, DiskModel]:
            return {n: read_model(self.repository, n) for n in wanted}

        disks = await asyncio.to_thread(read)
        return {
            n: model_across(reports, n, disks[n].digest, self._should_serve(disks[n]))
            for n in wanted
        }

    async def wait_replicas(self, name: str, timeout_s: float) -> list[ReplicaModel]:
        """Wait until every live replica has applied this replica's last change of
        `name`; DeadlineExceeded naming those behind, PreconditionFailed naming those
        that could not apply it."""
        announced = self._announced.get(name)
        if announced is None or not announced.event:
            raise DeadlineExceeded(
                f"model {shown(name)} changed here and in the repository, but the change "
                "could not be announced to the other replicas (Redis unavailable); each "
                f"finds it at its next resync (within {self.options.resync_s:.0f}s)"
            )
        expected = Expectation(name, announced.event, announced.action, announced.version)
        what = f"model {shown(name)} was {announced.action} here and in the repository"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            reports = await self.reports()
            verdict = judge(reports, expected)
            if verdict.settled and not verdict.failed:
                return (await self.replicas_of([name]))[name]
            if verdict.settled:
                raise PreconditionFailed(
                    f"{what}, but not every replica could apply it: {_listed(verdict.failed)}"
                )
            if loop.time() >= deadline:
                raise DeadlineExceeded(
                    f"{what}, but not every live replica applied it within {timeout_s:g}s: "
                    + _listed(verdict.behind + verdict.failed)
                )
            await asyncio.sleep(_WAIT_POLL_S)


# ---- helpers ----------------------------------------------------------------------------


async def _announce(client: Redis, event: Event) -> str:
    """The unloaded set and the event in one transaction; the event's stream id."""
    async with client.pipeline(transaction=True) as pipe:
        if event.action == UNLOADED_ACTION:
            pipe.sadd(UNLOADED, event.model)
        elif event.action in (REGISTERED, RELOADED, UNREGISTERED):
            pipe.srem(UNLOADED, event.model)
        pipe.xadd(STREAM, event.fields(), maxlen=MAX_EVENTS, approximate=True)  # type: ignore[arg-type]
        results = await pipe.execute()
    return _text(results[-1])


def _only_live_fields_changed(
    before: DiskModel, now: DiskModel, served: Mapping[str, object], wanted: list[str]
) -> bool:
    """The same versions serve with the same files, and only live config fields moved."""
    if set(served) != set(wanted) or before.error or now.error:
        return False
    if any(before.files.get(v) != now.files.get(v) for v in wanted):
        return False
    return _without_live_fields(before.config) == _without_live_fields(now.config)


def _without_live_fields(config: mc.ModelConfig | None) -> bytes:
    stripped = mc.ModelConfig()
    if config is not None:
        stripped.CopyFrom(config)
    for name in live_config.LIVE_FIELDS:
        stripped.ClearField(name)
    stripped.ClearField("name")
    return stripped.SerializeToString(deterministic=True)


def _changed_live_fields(before: mc.ModelConfig | None, now: mc.ModelConfig | None) -> list[str]:
    def only(config: mc.ModelConfig | None, field: str) -> bytes:
        kept = mc.ModelConfig()
        if config is not None:
            live_config.merge(config, kept, [field])
        return kept.SerializeToString(deterministic=True)

    return [f for f in live_config.LIVE_FIELDS if only(before, f) != only(now, f)]


def _listed(rows: Iterable[tuple[str, str]]) -> str:
    return "; ".join(f"{shown(replica)}: {why}" for replica, why in rows)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def default_replica_id() -> str:
    """hostname-pid-random: unique even for two gateways in one process (tests)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:80] or "replica"
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


def registry_from_settings(settings: Settings, control: ModelControl) -> ReplicaRegistry | None:
    """This replica's registry, or None when --registry-redis-url is unset (one replica)."""
    if not settings.registry_redis_url:
        return None
    if settings.model_repository is None:
        raise SettingsError(
            "registry_redis_url needs model_repository: the folder every replica shares"
        )
    if settings.registry_heartbeat_s <= 0 or settings.registry_resync_s < 0:
        raise SettingsError("registry_heartbeat_s must be > 0 and registry_resync_s >= 0")
    replica_id = settings.replica_id or default_replica_id()
    if not _REPLICA_ID.fullmatch(replica_id):
        raise SettingsError(
            f"replica_id {shown(replica_id)}: use letters, digits, '_', '.', ':' and '-', "
            "at most 128 characters"
        )
    # Control-plane bounds, not the cache's milliseconds: a lock or an event may take
    # a round trip to a busy Redis, and a blocking read waits block_s within one.
    options = RedisOptions(
        url=settings.registry_redis_url,
        timeout_s=1.0,
        connect_timeout_s=0.5,
        retry_after_s=1.0,
        max_connections=8,
    )
    try:
        link = RedisLink(options)
    except ValueError as exc:
        raise SettingsError(f"registry_redis_url: {exc}") from None  # may hold a password
    return ReplicaRegistry(
        link,
        control,
        RegistryOptions(
            replica_id=replica_id,
            heartbeat_s=settings.registry_heartbeat_s,
            resync_s=settings.registry_resync_s,
        ),
    )
