"""One settings object for the whole gateway.

Values come from defaults, then `INFERGATE_*` environment variables, then CLI flags
(applied by the CLI through `Settings.with_overrides`). The object is passed
explicitly to whoever needs it; nothing reads the environment behind its back.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "INFERGATE_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """Everything the gateway can be configured with; see README.md, "Configuration"."""

    # Listener.
    host: str = "127.0.0.1"
    port: int = 8001
    # gRPC message size limits; a larger message is refused with RESOURCE_EXHAUSTED.
    max_receive_message_mb: int = 256
    max_send_message_mb: int = 256
    # Seconds that in-flight RPCs get to finish on SIGTERM/SIGINT.
    shutdown_grace_s: float = 10.0

    # Model repository.
    model_repository: Path | None = None
    # Batch limit given to models whose config is derived from the artifact
    # (no config.pbtxt) and whose first dimension is variable.
    default_max_batch_size: int = 32

    # Backends.
    backends: tuple[str, ...] = ()  # empty: every installed backend
    # Threads that run backend calls; runtimes drop the GIL while computing.
    worker_threads: int = 2
    # Batches of one model that may run at once; more requests wait and batch up.
    max_inflight_batches: int = 1
    # A batch whose arm's fastest recent call took at most this long runs on the
    # event loop instead of a worker thread, whose hand-off costs more than a small
    # model's call; 0: never.
    inline_below_us: int = 200
    # Response cache size, shared by every model with response_cache { enable: true }.
    response_cache_mb: int = 256
    # Threads inside one runtime call (onnxruntime intra-op); 0 lets the runtime choose.
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # Ask for GPU execution providers where they load; false forces CPU.
    use_gpu: bool = True
    # How long a busy event loop may hold the GIL while a worker thread waits for it
    # (sys.setswitchinterval; Python's default is 5000). A runtime call needs the GIL
    # to start and to hand back its outputs: at 5 ms a 15 ms batch waited up to 5 ms
    # more behind the loop encoding responses. Set by `infergate serve` only; 0 keeps
    # Python's default.
    gil_switch_interval_us: int = 250

    # Prometheus metrics at http://<metrics_host>:<metrics_port>/metrics; 0 turns it off.
    metrics_port: int = 8002
    metrics_host: str = "127.0.0.1"
    # Tracing: None follows OTEL_* variables (on when an OTLP endpoint is set).
    tracing: bool | None = None

    # Admin RPC and model control (docs/admin.md). Admin calls need this bearer
    # token (or the one in admin_token_file); with neither, they are refused, unless
    # insecure_admin is set on a loopback host. repr=False: never in a log line.
    admin_token: str = field(default="", repr=False)
    admin_token_file: Path | None = None
    insecure_admin: bool = False
    # When set, inference calls need this bearer token (or the admin one).
    inference_token: str = field(default="", repr=False)
    inference_token_file: Path | None = None
    # Largest artifact a registration may upload.
    max_artifact_mb: int = 2048
    # TLS for the listener: certificate chain and key (PEM); with a client CA, clients
    # must present a certificate it signed.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    log_level: str = "INFO"
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by every `INFERGATE_<FIELD>` variable that is set."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, f.type, raw)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given fields replaced; None values are ignored."""
        given = {k: v for k, v in overrides.items() if v is not None}
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(given) - known
        if unknown:
            raise SettingsError(f"unknown settings: {sorted(unknown)}")
        return dataclasses.replace(self, **given)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _parse(name: str, type_name: Any, raw: str) -> Any:
    """Parse an environment string by the field's declared type (a string annotation)."""
    kind = str(type_name)
    try:
        if kind in ("bool", "bool | None"):
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("Path"):
            return Path(raw) if raw else None
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from exc
