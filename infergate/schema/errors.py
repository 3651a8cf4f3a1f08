"""The gateway's error hierarchy.

Every failure the core reports is one of these; the gRPC layer maps each class to a
status code in exactly one place (infergate.gateway.status). Messages are written for
the caller: they name the model or tensor and say what was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# How much of a caller's own string a message repeats: enough to recognise it, never
# so much that a 1 MB model name makes the status itself too large to send.
SHOWN_CHARS = 64
SHOWN_ITEMS = 16


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """A caller's string as a message quotes it: in quotes, control characters
    escaped (a NUL shows as \\x00 instead of vanishing on the wire), and cut to
    `limit` characters with the full length said."""
    cut = text[:limit]
    escaped = "".join(ch if ch.isprintable() and ch not in "\\'" else _escape(ch) for ch in cut)
    more = f"... ({len(text)} characters)" if len(text) > limit else ""
    return f"'{escaped}'{more}"


def shown_list(
    items: Iterable[Any], limit: int = SHOWN_ITEMS, each: Callable[[Any], object] | None = None
) -> str:
    """A list (a shape, names) as a message shows it: at most `limit` items, each
    passed through `each` (e.g. shown, for a caller's strings) only if it is shown."""
    values = list(items)
    head = values[:limit] if each is None else [each(v) for v in values[:limit]]
    if len(values) <= limit:
        return str(head)
    return f"[{', '.join(str(v) for v in head)}, ...] ({len(values)} items)"


def _escape(ch: str) -> str:
    if ch in "\\'":
        return "\\" + ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class GatewayError(Exception):
    """Base of every error the gateway reports to a caller."""


class NotFound(GatewayError):
    """What the call names does not exist here."""


class ModelNotFound(NotFound):
    """No such model, or no such version of it."""


class ModelNotReady(GatewayError):
    """The model exists but cannot serve now (failed to load, loading, unloading)."""


class InvalidInput(GatewayError):
    """The request does not match the protocol or the model's inputs."""


class InputRejected(InvalidInput):
    """The runtime failed on this request's values while it runs other inputs.

    Found by the router (the arm still runs its canary), so the failure follows the
    request: it fails that request alone and never counts against the arm.
    """


class QueueFull(GatewayError):
    """The model's queue is at its limit; the request was rejected at once."""


class DeadlineExceeded(GatewayError):
    """The request's time ran out before it could run."""


class Cancelled(GatewayError):
    """The caller went away before the request ran."""


class BackendFailed(GatewayError):
    """The runtime raised while executing a batch."""


class ModelLoadError(GatewayError):
    """A model's artifacts or config could not be loaded."""


class Unauthenticated(GatewayError):
    """The call lacks valid credentials."""


class PermissionDenied(GatewayError):
    """The call is not allowed in this configuration."""


class Unavailable(GatewayError):
    """The gateway is shutting down or no backend can take the work."""


class AlreadyExists(GatewayError):
    """What the call would create exists already (a model version is never overwritten)."""


class ArtifactTooLarge(GatewayError):
    """An uploaded artifact is larger than the gateway accepts (--max-artifact-mb)."""


class ChecksumMismatch(GatewayError):
    """An uploaded artifact's bytes do not match the SHA-256 announced for it."""


class PreconditionFailed(GatewayError):
    """The call cannot run in the gateway's present configuration or state."""
