"""The registry's records in Redis: the event stream, and the names of every key.

Every model change a replica makes (register, reload, live update, unregister) is
one entry in the stream `infergate:registry:events`, added after the change is in
the repository and serving there:

    replica  the --replica-id that made it
    model    the model's name
    action   registered | reloaded | updated | unregistered | unloaded
             (unloaded: unregistered with its files kept)
    version  the version registered ("" for the others)
    digest   the model's repository state after the change (repository_state)
    at_ms    wall clock of the replica, for people reading the stream

An event is a hint, not the truth: a replica that reads it reads the model from
the shared repository and converges on what it finds (replica_registry), so an
event read twice, late, or never (then a resync finds the change) leads to the
same state. The stream is capped at about MAX_EVENTS entries (XADD MAXLEN ~) and
has no TTL, so an LRU eviction policy for TTL'd keys never drops it.

Other keys (all under `infergate:registry:`): `lock:<model>` the change lock of a
model (redis_lock, with a lease), `replica:<id>` a replica's report (replica_state,
with a TTL its heartbeat renews), `replicas` the set of ids that wrote one,
`unloaded` the models unloaded with their files kept (so that replicas do not load
them back from the repository).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

PREFIX = "infergate:registry"
STREAM = f"{PREFIX}:events"
REPLICAS = f"{PREFIX}:replicas"
UNLOADED = f"{PREFIX}:unloaded"
MAX_EVENTS = 10_000

REGISTERED = "registered"
RELOADED = "reloaded"
UPDATED = "updated"
UNREGISTERED = "unregistered"
UNLOADED_ACTION = "unloaded"
ACTIONS = (REGISTERED, RELOADED, UPDATED, UNREGISTERED, UNLOADED_ACTION)
# After these the model serves; after the others it does not.
SERVING_ACTIONS = (REGISTERED, RELOADED, UPDATED)

# The position before every event.
START = "0-0"


def lock_key(model: str) -> str:
    return f"{PREFIX}:lock:{quote(model, safe='')}"


def replica_key(replica: str) -> str:
    return f"{PREFIX}:replica:{quote(replica, safe='')}"


@dataclass(frozen=True)
class Event:
    replica: str
    model: str
    action: str
    version: str = ""
    digest: str = ""
    id: str = ""  # the stream entry's id, once read back or added

    def fields(self) -> dict[str, str]:
        return {
            "replica": self.replica,
            "model": self.model,
            "action": self.action,
            "version": self.version,
            "digest": self.digest,
            "at_ms": str(int(time.time() * 1000)),
        }

    def __str__(self) -> str:
        version = f" version {self.version}" if self.version else ""
        return f"{self.replica} {self.action} {self.model}{version}"


def decode(entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> Event | None:
    """An event read from the stream; None if the entry is not one of ours."""
    values = {_text(k): _text(v) for k, v in fields.items()}
    try:
        event = Event(
            replica=values["replica"],
            model=values["model"],
            action=values["action"],
            version=values.get("version", ""),
            digest=values.get("digest", ""),
            id=_text(entry_id),
        )
    except KeyError:
        return None
    return event if event.action in ACTIONS and event.model else None


def position_key(entry_id: str) -> tuple[int, int]:
    """A stream id ("<ms>-<seq>") as something that sorts like it; "" sorts first."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return -1, -1


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
