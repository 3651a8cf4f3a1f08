"""Find the installed backends through the `infergate.backends` entry-point group.

A backend whose runtime package is missing (ImportError while loading it or asking
its version) is left out with one log line saying why; it never stops the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from infergate.backends.base import Backend

log = logging.getLogger(__name__)

GROUP = "infergate.backends"


@dataclass(frozen=True)
class MissingBackend:
    name: str
    reason: str


@dataclass(frozen=True)
class Discovered:
    backends: dict[str, Backend]  # by name, in entry-point order
    unavailable: tuple[MissingBackend, ...]


def discover(only: Iterable[str] = (), points: Iterable[EntryPoint] | None = None) -> Discovered:
    """Instantiate every backend found (or only those named) whose runtime imports."""
    wanted = set(only)
    found: dict[str, Backend] = {}
    missing: list[MissingBackend] = []
    for point in entry_points(group=GROUP) if points is None else points:
        if wanted and point.name not in wanted:
            continue
        try:
            backend_class = point.load()
            backend = backend_class()
            if not isinstance(backend, Backend):
                raise TypeError(f"{point.value} is not an infergate Backend")
            backend.version()  # imports the runtime: the real availability check
        except Exception as exc:  # a broken third-party backend must not stop us
            reason = f"{type(exc).__name__}: {exc}"
            log.info("backend %s is not available: %s", point.name, reason)
            missing.append(MissingBackend(point.name, reason))
            continue
        found[point.name] = backend
    for name in sorted(wanted - set(found) - {m.name for m in missing}):
        missing.append(MissingBackend(name, "no such backend is installed"))
    return Discovered(found, tuple(missing))
