"""Who serves what: each replica's report of its models, and judging a wait on them.

Every replica keeps one key in Redis, `infergate:registry:replica:<id>`, holding a
JSON report: the stream position up to which it has applied every registry event,
and per model its state, serving versions, reason and the repository digest it
last converged on. The key has a TTL of a few heartbeats and the replica rewrites
it every heartbeat and after every change, so a replica that stops (or loses
Redis) drops out of the set of live replicas by itself; one that stops cleanly
deletes it. Reads are two round trips: the set of ids, then their reports.

`judge` answers "has every live replica applied event E of model M?" for
`--wait-replicas`: a replica whose position is before E is behind; one at or past
it must show the state E leads to (serving the model, with the registered
version; or not serving it), or it has failed to apply it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from infergate.gateway.core.redis_link import RedisLink
from infergate.gateway.core.registry_events import (
    REPLICAS,
    SERVING_ACTIONS,
    position_key,
    replica_key,
)

log = logging.getLogger(__name__)

ABSENT = "ABSENT"  # the model is not loaded on that replica (no entry in its registry)
READY = "READY"
_FORMAT = 1


@dataclass(frozen=True)
class ModelReport:
    state: str  # READY, LOADING, UNAVAILABLE (core.registry.ModelState)
    versions: tuple[str, ...] = ()  # serving
    reason: str = ""
    digest: str = ""  # the repository state it last converged on ("" unknown)


@dataclass(frozen=True)
class ReplicaReport:
    replica: str
    position: str  # every registry event up to this stream id is applied ("" unknown)
    models: Mapping[str, ModelReport] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "replica": self.replica,
                "position": self.position,
                "models": {
                    name: [m.state, list(m.versions), m.reason, m.digest]
                    for name, m in self.models.items()
                },
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> ReplicaReport | None:
        """The report, or None if it is not one this version can read."""
        try:
            data = json.loads(raw)
            if data.get("format") != _FORMAT:
                return None
            models = {
                str(name): ModelReport(str(s), tuple(str(v) for v in vs), str(r), str(d))
                for name, (s, vs, r, d) in data["models"].items()
            }
            return cls(str(data["replica"]), str(data["position"]), models)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def model(self, name: str) -> ModelReport:
        return self.models.get(name) or ModelReport(ABSENT)


@dataclass(frozen=True)
class ReplicaModel:
    """One replica's state of one model, for ListModels / DescribeModel."""

    replica: str
    state: str  # READY, LOADING, UNAVAILABLE, ABSENT
    versions: tuple[str, ...]
    reason: str
    position: str
    # It has converged on the repository state the answering replica reads now.
    in_step: bool


def model_across(
    reports: Iterable[ReplicaReport], name: str, digest_now: str, should_serve: bool
) -> list[ReplicaModel]:
    """Model `name` on every replica that reported, by replica id. `digest_now` and
    `should_serve`: the repository as the answering replica reads it now."""
    rows = []
    for report in sorted(reports, key=lambda r: r.replica):
        model = report.model(name)
        if model.state == ABSENT:
            in_step = not should_serve
        else:
            in_step = should_serve and model.digest == digest_now
        rows.append(
            ReplicaModel(
                report.replica, model.state, model.versions, model.reason, report.position, in_step
            )
        )
    return rows


# ---- Redis -------------------------------------------------------------------------


async def publish(link: RedisLink, report: ReplicaReport, ttl_s: float) -> None:
    """Write this replica's report with its TTL (RedisUnavailable passes through)."""
    key = replica_key(report.replica)
    value = report.to_json()
    ttl_ms = max(1, round(ttl_s * 1000))

    async def write(client: Redis) -> object:
        async with client.pipeline(transaction=True) as pipe:
            pipe.set(key, value, px=ttl_ms)
            pipe.sadd(REPLICAS, report.replica)
            return await pipe.execute()

    await link.call(write)


async def withdraw(link: RedisLink, replica: str) -> None:
    """Remove this replica's report: it no longer counts as live."""

    async def delete(client: Redis) -> object:
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(replica_key(replica))
            pipe.srem(REPLICAS, replica)
            return await pipe.execute()

    await link.call(delete)


async def read_all(link: RedisLink) -> list[ReplicaReport]:
    """The reports of every live replica; ids whose report expired are forgotten."""

    async def members(client: Redis) -> set[bytes | str]:
        return await client.smembers(REPLICAS)

    ids = sorted(_text(m) for m in await link.call(members))
    if not ids:
        return []

    async def values(client: Redis) -> list[bytes | str | None]:
        return await client.mget([replica_key(i) for i in ids])

    raw = await link.call(values)
    reports, gone = [], []
    for replica, value in zip(ids, raw, strict=True):
        if value is None:
            gone.append(replica)
            continue
        report = ReplicaReport.from_json(value)
        if report is not None:
            reports.append(report)
    if gone:

        async def forget(client: Redis) -> object:
            return await client.srem(REPLICAS, *gone)

        await link.call(forget)
    return reports


# ---- waiting -----------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What event `event` (stream id) of `model` leads to on every replica."""

    model: str
    event: str
    action: str
    version: str = ""

    @property
    def serving(self) -> bool:
        return self.action in SERVING_ACTIONS


@dataclass(frozen=True)
class Verdict:
    done: tuple[str, ...]  # replicas that applied it
    behind: tuple[tuple[str, str], ...]  # (replica, what it shows) not there yet
    failed: tuple[tuple[str, str], ...]  # (replica, why) applied it and failed

    @property
    def settled(self) -> bool:
        return not self.behind


def judge(reports: Sequence[ReplicaReport], expected: Expectation) -> Verdict:
    done: list[str] = []
    behind: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    target = position_key(expected.event)
    for report in sorted(reports, key=lambda r: r.replica):
        model = report.model(expected.model)
        shows = _shows(model)
        if not report.position or position_key(report.position) < target:
            behind.append((report.replica, f"not at the change yet; {shows}"))
        elif not expected.serving:
            if model.state == ABSENT:
                done.append(report.replica)
            else:
                failed.append((report.replica, f"still {shows}"))
        elif model.state == READY and (not expected.version or expected.version in model.versions):
            done.append(report.replica)
        elif model.state == "LOADING":
            behind.append((report.replica, shows))
        else:
            failed.append((report.replica, shows))
    return Verdict(tuple(done), tuple(behind), tuple(failed))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _shows(model: ModelReport) -> str:
    if model.state == ABSENT:
        return "not serving the model"
    versions = f" versions {', '.join(model.versions)}" if model.versions else ""
    reason = f" ({model.reason})" if model.reason else ""
    return f"{model.state}{versions}{reason}"
