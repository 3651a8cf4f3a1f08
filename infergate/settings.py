"""One settings object for the whole gateway.

Values come from defaults, then `INFERGATE_*` environment variables, then CLI flags
(applied by the CLI through `Settings.with_overrides`). The object is passed
explicitly to whoever needs it; nothing reads the environment behind its back.

Each setting is declared once, as a field of `Settings`: its type, its default, and in
its metadata (`option()`) its help text plus what its flag needs when the field name
alone does not say it. `SETTING_SPECS` derives the rest from those fields (the
environment variable, the flag, how a string becomes a value), so the environment
reader here and the `serve` flags in the CLI cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType, UnionType
from typing import Any

ENV_PREFIX = "INFERGATE_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# The key under which `option()` stores a field's Option in its metadata.
_OPTION = "infergate.option"


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Option:
    """What a setting's declaration adds to its type and default."""

    help: str
    # The flag, when it is not `--field-name` (a bool that defaults to True needs one
    # that says it turns the setting off, like --no-gpu).
    flag: str | None = None
    # No flag at all: the value would show in `ps` (the admin token).
    env_only: bool = False
    # Words the flag takes and the values they mean (`--tracing on|off`).
    choices: Mapping[str, object] | None = None
    # How help shows the default when the value alone says little ("every installed
    # backend" rather than "()").
    shown_default: str | None = None


def option(
    help: str,
    *,
    flag: str | None = None,
    env_only: bool = False,
    choices: Mapping[str, object] | None = None,
    shown_default: str | None = None,
) -> dict[str, Option]:
    """A `Settings` field's metadata: `field(default=..., metadata=option("help"))`."""
    return {_OPTION: Option(help, flag, env_only, choices, shown_default)}


@dataclass(frozen=True)
class Settings:
    """Everything the gateway can be configured with; see README.md, "Configuration"."""

    # Listener.
    host: str = field(default="127.0.0.1", metadata=option("address to bind"))
    port: int = field(
        default=8001, metadata=option("port to bind; 0 picks a free one (see --port-file)")
    )
    # gRPC message size limits.
    max_receive_message_mb: int = field(
        default=256,
        metadata=option("largest request message in MiB; a larger one gets RESOURCE_EXHAUSTED"),
    )
    max_send_message_mb: int = field(
        default=256,
        metadata=option("largest response message in MiB; a larger one gets RESOURCE_EXHAUSTED"),
    )
    shutdown_grace_s: float = field(
        default=10.0,
        metadata=option("seconds that in-flight calls get to finish after SIGTERM/SIGINT"),
    )
    # A load balancer (or Kubernetes) learns from the health service that a replica
    # is going, and needs a moment to stop sending it calls; refusing them at once
    # would fail the calls already on their way.
    drain_s: float = field(
        default=5.0,
        metadata=option(
            "on SIGTERM, seconds that health reports NOT_SERVING while calls are still "
            "served, before the listener closes (Ctrl-C skips it)"
        ),
    )
    # Behind an L4 balancer a client's connection, and so its replica, never changes;
    # an age limit makes clients reconnect now and then, spreading them over replicas
    # that came later (docs/scale-out.md). gRPC adds +-10% jitter to the age itself.
    max_connection_age_s: float = field(
        default=0.0,
        metadata=option(
            "send each client connection GOAWAY after about this long, so the client "
            "reconnects (and may land on another replica); 0: never"
        ),
    )
    max_connection_age_grace_s: float = field(
        default=0.0,
        metadata=option(
            "after that GOAWAY, how long calls still running on the connection get before "
            "it is closed; 0: as long as they need"
        ),
    )

    # Model repository.
    model_repository: Path | None = field(
        default=None, metadata=option("folder of models to serve")
    )
    # For models whose config is derived from the artifact (no config.pbtxt).
    default_max_batch_size: int = field(
        default=32,
        metadata=option(
            "batch limit for models without config.pbtxt whose first dimension is variable"
        ),
    )

    # Backends.
    backends: tuple[str, ...] = field(
        default=(),
        metadata=option("comma-separated backends to use", shown_default="every installed backend"),
    )
    # Runtimes drop the GIL while computing, so a few threads keep them busy.
    worker_threads: int = field(default=2, metadata=option("threads that run backend calls"))
    max_inflight_batches: int = field(
        default=1,
        metadata=option(
            "batches of one model that may run at once; more requests wait and batch up"
        ),
    )
    # A worker thread's hand-off costs more than a small model's call.
    inline_below_us: int = field(
        default=200,
        metadata=option(
            "run a batch on the event loop, not a worker thread, when its arm's fastest "
            "recent call took at most this long; 0: never"
        ),
    )
    # Threads cannot be stopped: a hung call keeps its thread, but no more work goes
    # to its arm (its circuit opens) and its batch fails over.
    execution_timeout_s: float = field(
        default=30.0,
        metadata=option(
            "a runtime call running longer is taken for hung: its batch fails over and "
            "its arm is skipped for a cool-down; 0: no limit"
        ),
    )
    response_cache_mb: int = field(
        default=256,
        metadata=option("response cache in MiB, shared by every model with response_cache enabled"),
    )
    # The response cache's shared tier (docs/scale-out.md): Redis behind the
    # in-process LRU, one for every replica. Redis failing never fails a request.
    cache_redis_url: str = field(
        default="",
        repr=False,  # may hold a password
        metadata=option(
            "Redis behind the in-process response cache, shared by every replica "
            "(redis://host:6379/0; with a password, set INFERGATE_CACHE_REDIS_URL instead, "
            "since a flag shows in ps); unset: in-process only"
        ),
    )
    cache_redis_ttl_s: float = field(
        default=3600.0,
        metadata=option("expiry of a shared cache entry whose model sets no response_cache_ttl_ms"),
    )
    cache_redis_timeout_ms: float = field(
        default=20.0,
        metadata=option(
            "longest a Redis command may take before the request goes on without the shared cache"
        ),
    )
    cache_redis_connect_timeout_ms: float = field(
        default=50.0, metadata=option("longest connecting to Redis may take")
    )
    cache_redis_retry_s: float = field(
        default=1.0,
        metadata=option(
            "after 3 Redis failures in a row, seconds without it before one request tries again"
        ),
    )
    cache_redis_invalidation_lag_s: float = field(
        default=1.0,
        metadata=option(
            "longest a replica may go on serving answers that another replica invalidated"
        ),
    )
    # Replicas sharing one repository follow each other's model changes through Redis
    # (docs/scale-out.md, "The registry"). Unset: this gateway alone, as before.
    registry_redis_url: str = field(
        default="",
        repr=False,  # may hold a password
        metadata=option(
            "Redis through which replicas sharing --model-repository follow each other's "
            "model changes (events, a lock per model, who serves what); may be the cache's "
            "Redis; with a password, set INFERGATE_REGISTRY_REDIS_URL instead; unset: no "
            "other replicas are followed"
        ),
    )
    replica_id: str = field(
        default="",
        metadata=option(
            "this replica's name in the registry (letters, digits, _ . : -)",
            shown_default="hostname-pid-random",
        ),
    )
    registry_heartbeat_s: float = field(
        default=1.0,
        metadata=option(
            "seconds between this replica's reports of what it serves; a replica silent for "
            "3 of them no longer counts as live"
        ),
    )
    registry_resync_s: float = field(
        default=30.0,
        metadata=option(
            "how often a replica compares the whole repository with what it serves, in case "
            "it missed an event; 0: only at start and when Redis comes back"
        ),
    )
    # On 2 cores, onnxruntime's own choice (a thread per core, spinning while idle)
    # cost 15-25% of throughput against one thread: its spinning threads took the
    # core the event loop needs. With spinning off it gains from every core
    # (infergate/gateway/tuning.py).
    intra_op_threads: int = field(
        default=0,
        metadata=option(
            "threads inside one runtime call; 0: automatic (onnxruntime, whose idle "
            "threads sleep: every core this process may use; OpenVINO and TFLite: one "
            "core less, at least 1, so a core stays with the gRPC front end); "
            "-1: the runtime's own default"
        ),
    )
    inter_op_threads: int = field(
        default=0,
        metadata=option(
            "threads across a call's independent operators (inter-op); 0: the runtime chooses"
        ),
    )
    use_gpu: bool = field(
        default=True,
        metadata=option("never use GPU execution providers", flag="--no-gpu"),
    )
    # sys.setswitchinterval: a runtime call needs the GIL to start and to hand back its
    # outputs; at Python's 5 ms a 15 ms batch waited up to 5 ms more behind the loop
    # encoding responses. Set by `infergate serve` only.
    gil_switch_interval_us: int = field(
        default=250,
        metadata=option(
            "longest a busy event loop keeps a runtime thread waiting for the GIL; 0: Python's 5000"
        ),
    )

    # Prometheus metrics at http://<metrics_host>:<metrics_port>/metrics.
    metrics_port: int = field(default=8002, metadata=option("Prometheus /metrics port; 0: off"))
    metrics_host: str = field(default="127.0.0.1", metadata=option("address for /metrics"))
    # None follows OTEL_* variables.
    # uvloop (libuv) runs the event loop's own bookkeeping in C: about 15-20% more
    # small-model requests a second here than asyncio's loop, with the same code.
    event_loop: str = field(
        default="auto",
        metadata=option(
            "the event loop `infergate serve` runs on: uvloop, asyncio, or auto (uvloop "
            "when installed)",
            choices={"auto": "auto", "uvloop": "uvloop", "asyncio": "asyncio"},
        ),
    )
    tracing: bool | None = field(
        default=None,
        metadata=option(
            "force tracing on or off",
            choices={"on": True, "off": False},
            shown_default="on when OTEL_EXPORTER_OTLP_ENDPOINT is set",
        ),
    )

    # Admin RPC and model control (docs/admin.md). Admin calls need the admin token
    # (from either source); with neither, they are refused, unless insecure_admin is
    # set on a loopback host. Tokens have repr=False: never in a log line.
    admin_token: str = field(
        default="",
        repr=False,
        # A flag's value would show in `ps`.
        metadata=option("bearer token that admin calls need", env_only=True),
    )
    admin_token_file: Path | None = field(
        default=None, metadata=option("file holding the admin token")
    )
    insecure_admin: bool = field(
        default=False,
        metadata=option("allow admin calls without a token (loopback addresses only)"),
    )
    inference_token: str = field(
        default="",
        repr=False,
        metadata=option("require this bearer token (or the admin one) for inference"),
    )
    inference_token_file: Path | None = field(
        default=None, metadata=option("file holding the inference token")
    )
    max_artifact_mb: int = field(
        default=2048, metadata=option("largest artifact a registration may upload, in MiB")
    )
    # With a client CA, clients must present a certificate it signed.
    tls_cert: Path | None = field(
        default=None, metadata=option("serve TLS with this certificate chain (PEM)")
    )
    tls_key: Path | None = field(
        default=None, metadata=option("the certificate's private key (PEM)")
    )
    tls_client_ca: Path | None = field(
        default=None, metadata=option("require client certificates this CA signed")
    )

    log_level: str = field(default="INFO", metadata=option("DEBUG, INFO, WARNING or ERROR"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by every `INFERGATE_<FIELD>` variable that is set."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in SETTING_SPECS:
            raw = env.get(spec.env)
            if raw is None:
                continue
            try:
                values[spec.name] = spec.parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{spec.env}={raw!r}: {exc}") from exc
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


@dataclass(frozen=True)
class SettingSpec:
    """One setting as the outside sees it, derived from its field in `Settings`."""

    name: str
    default: object
    help: str
    # None: no flag (environment only).
    flag: str | None
    choices: Mapping[str, object] | None
    # What help shows after "default:"; None shows nothing.
    shown_default: str | None
    # An environment string, or a flag's argument, to a value of the field's type.
    parse: Callable[[str], Any]

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def specs_of(cls: type[Any]) -> tuple[SettingSpec, ...]:
    """The specs of a dataclass declared as `Settings` is; TypeError where one is wrong."""
    # Real types, not the annotation strings that `from __future__ import annotations`
    # leaves on the fields.
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        option = f.metadata.get(_OPTION)
        if not isinstance(option, Option):
            raise TypeError(f"{cls.__name__}.{f.name} has no metadata=option(...)")
        default = f.default
        if default is dataclasses.MISSING:
            # Settings are immutable values, so a plain default always does.
            raise TypeError(f"{cls.__name__}.{f.name} needs a plain default")
        if default is True and option.flag is None and not option.env_only:
            # A bool flag switches the setting away from its default; `--use-gpu`
            # meaning "do not" would mislead.
            raise TypeError(f"{cls.__name__}.{f.name} defaults to True: name its flag (--no-...)")
        specs.append(
            SettingSpec(
                name=f.name,
                default=default,
                help=option.help,
                flag=None if option.env_only else option.flag or "--" + f.name.replace("_", "-"),
                choices=option.choices,
                shown_default=_shown_default(default, option),
                parse=_parser_for(hints[f.name], f"{cls.__name__}.{f.name}"),
            )
        )
    return tuple(specs)


def _shown_default(default: object, option: Option) -> str | None:
    if option.shown_default is not None:
        return option.shown_default
    # A bool flag's help says what it switches; None, "" and () mean "not set".
    if isinstance(default, bool) or default in (None, "", ()):
        return None
    return str(default)


def _parser_for(hint: object, name: str) -> Callable[[str], Any]:
    """How a string becomes a value of the type `hint` (Optional: of the type inside)."""
    if typing.get_origin(hint) in (typing.Union, UnionType):
        inner = [arg for arg in typing.get_args(hint) if arg is not NoneType]
        if len(inner) == 1:
            hint = inner[0]
    if hint is bool:
        return _boolean
    if hint is int:
        return int
    if hint is float:
        return float
    if hint is str:
        return str
    if hint is Path:
        return _path
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, ...):
        return _comma_list
    raise TypeError(f"{name}: no parser for {hint}")


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


def _path(raw: str) -> Path | None:
    # Empty: unset, rather than Path("") which is the working directory.
    return Path(raw) if raw else None


def _comma_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


SETTING_SPECS: tuple[SettingSpec, ...] = specs_of(Settings)
