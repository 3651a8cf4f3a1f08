"""`infergate models ...`: register, list, describe, update and unregister models on a
running gateway over its admin RPC.

Exit status: 0 done; 1 the gateway refused or failed the call (the message gives its
gRPC status); 2 bad usage or an unreadable local file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf import json_format

from infergate.clients import AdminClient, AdminError, ProgressBar, Tls, batching
from infergate.gateway.core.repository import parse_config
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import ModelLoadError

TOKEN_VARIABLE = "INFERGATE_ADMIN_TOKEN"
# Artifact names the backends look for, by the flag that uploads them.
_ARTIFACT_FLAGS = {"onnx": "model.onnx", "tflite": "model.tflite"}


class UsageError(Exception):
    """Bad arguments or unreadable local files (exit status 2)."""


def connection_arguments() -> argparse.ArgumentParser:
    """Where the gateway is and how to reach its admin service: a parent parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default="127.0.0.1:8001", help="gateway address host:port")
    common.add_argument(
        "--token", help=f"admin token (default: ${TOKEN_VARIABLE}; visible in ps, prefer it)"
    )
    common.add_argument("--token-file", type=Path, help="read the admin token from this file")
    common.add_argument("--tls-ca", type=Path, help="CA certificate (PEM): connect over TLS")
    common.add_argument("--tls-cert", type=Path, help="client certificate (PEM), for mutual TLS")
    common.add_argument("--tls-key", type=Path, help="client key (PEM), for mutual TLS")
    common.add_argument("--timeout-s", type=float, default=60.0, help="per call (not uploads)")
    return common


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `models` and its subcommands to the `infergate` parser."""
    models = sub.add_parser("models", help="register, list, update, remove models (admin RPC)")
    commands = models.add_subparsers(dest="models_command", required=True)

    common = connection_arguments()

    register = commands.add_parser("register", parents=[common], help="upload a model version")
    register.add_argument("name")
    register.add_argument("--onnx", type=Path, help="ONNX file, uploaded as model.onnx")
    register.add_argument("--tflite", type=Path, help="TFLite file, uploaded as model.tflite")
    register.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="any other artifact (e.g. model.xml=ir.xml); repeat for each",
    )
    register.add_argument("--config", type=Path, help="config.pbtxt for the model")
    register.add_argument("--version", default="", help="version number (default: the next)")
    register.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    _add_wait_replicas(register)
    register.set_defaults(run=run, command_run=_register)

    listing = commands.add_parser("list", parents=[common], help="models and their state")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=run, command_run=_list)

    describe = commands.add_parser("describe", parents=[common], help="one model in detail")
    describe.add_argument("name")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(run=run, command_run=_describe)

    update = commands.add_parser(
        "update", parents=[common], help="change batching, cache or routing live"
    )
    update.add_argument("name")
    update.add_argument("--max-queue-delay-us", type=int)
    update.add_argument("--max-batch-size", type=int)
    update.add_argument("--preferred-batch-size", type=int, nargs="+", metavar="N")
    update.add_argument("--max-queue-size", type=int, help="0: unbounded")
    update.add_argument(
        "--batching", action=argparse.BooleanOptionalAction, help="dynamic batching on or off"
    )
    update.add_argument("--cache", action=argparse.BooleanOptionalAction, help="response cache")
    update.add_argument("--cache-ttl-ms", type=int, help="0: entries never expire")
    update.add_argument("--routing-policy", help="latency, fixed, round_robin, cost")
    update.add_argument("--fixed-arm", help="for --routing-policy fixed: backend or arm name")
    _add_wait_replicas(update)
    update.set_defaults(run=run, command_run=_update)

    unregister = commands.add_parser(
        "unregister", parents=[common], help="stop serving a model and remove its files"
    )
    unregister.add_argument("name")
    unregister.add_argument("--keep-files", action="store_true", help="keep it on disk")
    _add_wait_replicas(unregister)
    unregister.set_defaults(run=run, command_run=_unregister)

    optimize = commands.add_parser(
        "optimize",
        parents=[common],
        help="build variants (int8, fp16, bf16, optimized), gate them, serve those admitted",
    )
    optimize.add_argument("name")
    optimize.add_argument(
        "--variants", default="", help="comma-separated (default: every one this machine makes)"
    )
    optimize.add_argument("--backends", default="", help="comma-separated (default: all serving)")
    source = optimize.add_mutually_exclusive_group(required=True)
    source.add_argument("--calibration", type=Path, help=".npz of inputs (and labels)")
    source.add_argument(
        "--captured",
        action="store_true",
        help="calibrate on the live requests the model keeps (its config's capture_rows)",
    )
    optimize.add_argument(
        "--validation", type=Path, help=".npz kept apart for the gate (default: split)"
    )
    optimize.add_argument("--version", default="", help="default: the newest serving one")
    for threshold, meaning in _THRESHOLDS.items():
        optimize.add_argument(f"--{threshold.replace('_', '-')}", type=float, help=meaning)
    optimize.add_argument("--json", action="store_true", help="the verdicts as JSON")
    optimize.set_defaults(run=run, command_run=_optimize)

    profile = commands.add_parser(
        "profile", parents=[common], help="measure every arm of a model; a report with plots"
    )
    add_profile_arguments(profile)
    profile.set_defaults(run=run, command_run=run_profile)


_THRESHOLDS = {
    "max_accuracy_drop": "largest accuracy drop (absolute, with labels; default 0.01)",
    "min_top1_agreement": "least share of rows whose top class agrees with fp32 (0.99)",
    "max_abs_error": "largest absolute difference from fp32 (default: none)",
    "max_mean_rel_error": "largest mean relative difference from fp32 (default: none)",
}


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `infergate profile` / `infergate models profile`."""
    parser.add_argument("name")
    parser.add_argument("--version", default="")
    parser.add_argument("--batch-sizes", default="", help="e.g. 1,8,32 (default: 1, 8, max)")
    parser.add_argument("--concurrency", default="", help="calling threads (default: 1,2)")
    parser.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="KIND=USD_PER_HOUR",
        help="price per hour of a device kind (defaults: cpu=0.10, cuda=1.20); repeat",
    )
    parser.add_argument("--latency-budget-ms", type=float, default=0.0)
    parser.add_argument("--seconds-per-case", type=float, default=0.0)
    parser.add_argument(
        "--out", type=Path, default=Path("profile"), help="folder for the report and plots"
    )


# Without a number, --wait-replicas waits this long.
WAIT_REPLICAS_S = 60.0


def _add_wait_replicas(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait-replicas",
        type=float,
        nargs="?",
        const=WAIT_REPLICAS_S,
        default=0.0,
        metavar="SECONDS",
        help="return once every live replica has applied the change (gateways following a "
        f"shared registry); fail after SECONDS ({WAIT_REPLICAS_S:g} without a number)",
    )


def _replicas_line(replicas: Sequence[apb.ReplicaModel]) -> str:
    states = ", ".join(
        f"{r.replica} {r.state}" + (f" ({','.join(r.versions)})" if r.versions else "")
        for r in replicas
    )
    return f"on {len(replicas)} replicas: {states}"


# ---- commands ---------------------------------------------------------------------------


def _register(args: argparse.Namespace) -> int:
    files = _artifact_files(args)
    config = _read_config(args.config) if args.config else None
    progress = None if args.no_progress else ProgressBar(sys.stderr)
    with _client(args) as admin:
        response = admin.register(
            args.name, files, config, args.version, progress, wait_replicas_s=args.wait_replicas
        )
    if progress is not None:
        progress.close()
    print(
        f"registered {response.name} version {response.version} on {response.backend} "
        f"({response.device}) in {response.load_ms:.0f} ms"
        + (
            f"; replaced version {', '.join(response.replaced_versions)}"
            if response.replaced_versions
            else ""
        )
    )
    if response.replicas:
        print(_replicas_line(response.replicas))
    return 0


def _list(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        models = admin.list_models()
    if args.json:
        print(
            json_format.MessageToJson(
                apb.ListModelsResponse(models=models), preserving_proto_field_name=True
            )
        )
        return 0
    rows = [("NAME", "STATE", "VERSION", "ON DISK", "BACKEND", "DEVICE", "REASON")]
    rows += [
        (
            m.name,
            m.state,
            m.serving_version or "-",
            ",".join(m.versions) or "-",
            m.backend or "-",
            m.device or "-",
            m.reason,
        )
        for m in models
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True)) + "  " + r[6])
    return 0


def _describe(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        described = admin.describe(args.name)
    if args.json:
        print(json_format.MessageToJson(described, preserving_proto_field_name=True))
    else:
        print(format_description(described))
    return 0


def _update(args: argparse.Namespace) -> int:
    update = batching(
        max_queue_delay_us=args.max_queue_delay_us,
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=args.preferred_batch_size,
        max_queue_size=args.max_queue_size,
        enabled=args.batching,
        cache=args.cache,
        cache_ttl_ms=args.cache_ttl_ms,
        routing_policy=args.routing_policy,
        fixed_arm=args.fixed_arm,
    )
    if not update.paths:
        raise UsageError("nothing to update: give at least one setting (see --help)")
    with _client(args) as admin:
        config = admin.update(args.name, update, wait_replicas_s=args.wait_replicas)
    print(
        f"updated {args.name}: {', '.join(update.paths)}"
        + ("; every live replica applied it" if args.wait_replicas else "")
    )
    print(_settings_line(config))
    return 0


def _unregister(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        response = admin.unregister(
            args.name, keep_files=args.keep_files, wait_replicas_s=args.wait_replicas
        )
    versions = ", ".join(response.versions) or "none serving"
    files = "files removed" if response.files_removed else "files kept"
    print(f"unregistered {args.name} (versions: {versions}; {files})")
    if response.replicas:
        print(_replicas_line(response.replicas))
    return 0


def _optimize(args: argparse.Namespace) -> int:
    for path in (args.calibration, args.validation):
        if path is not None and not path.is_file():
            raise UsageError(f"{path} is not a readable file")
    thresholds = {name: value for name in _THRESHOLDS if (value := getattr(args, name)) is not None}
    with _client(args) as admin:
        result = admin.optimize(
            args.name,
            None if args.captured else args.calibration,
            args.validation,
            variants=_listed(args.variants),
            backends=_listed(args.backends),
            thresholds=thresholds,
            version=args.version,
            progress=True,
        )
    if args.json:
        print(json_format.MessageToJson(result, preserving_proto_field_name=True))
        return 0
    for r in result.results:
        figures = ", ".join(f"{k} {v:.4g}" for k, v in sorted(r.figures.items()))
        print(f"{r.backend}.{r.variant}: {r.status}" + (f" ({figures})" if figures else ""))
        if r.reason and r.status != "admitted":
            print(f"    {r.reason}")
    print(f"arms serving {args.name}: {', '.join(result.arms)}")
    return 0


def run_profile(args: argparse.Namespace) -> int:
    prices: dict[str, float] = {}
    for item in args.price:
        kind, sep, value = item.partition("=")
        try:
            prices[kind] = float(value) if sep and kind else float("nan")
        except ValueError:
            prices[kind] = float("nan")
        if prices[kind] != prices[kind] or prices[kind] < 0:
            raise UsageError(f"--price wants KIND=USD_PER_HOUR, got {item!r}")
    with _client(args) as admin:
        report = admin.profile(
            args.name,
            args.version,
            _numbers(args.batch_sizes, "--batch-sizes"),
            _numbers(args.concurrency, "--concurrency"),
            prices,
            args.latency_budget_ms,
            args.seconds_per_case,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.md").write_text(report.report_markdown)
    (args.out / "profile.json").write_text(report.report_json)
    for name, data in report.plots.items():
        (args.out / Path(name).name).write_bytes(data)
    print(report.report_markdown)
    print(f"written to {args.out}/: profile.md, profile.json, {', '.join(sorted(report.plots))}")
    return 0


def _listed(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _numbers(text: str, flag: str) -> list[int]:
    try:
        numbers = [int(part) for part in _listed(text)]
    except ValueError:
        raise UsageError(f"{flag} wants comma-separated whole numbers, got {text!r}") from None
    if any(n < 1 for n in numbers):
        raise UsageError(f"{flag}: every number must be at least 1")
    return numbers


def run(args: argparse.Namespace) -> int:
    """Run a `models` subcommand, turning failures into messages and exit codes."""
    try:
        return int(args.command_run(args))
    except UsageError as exc:
        print(f"infergate: {exc}", file=sys.stderr)
        return 2
    except AdminError as exc:
        print(f"infergate: {exc.code.name}: {exc.message}", file=sys.stderr)
        if exc.code is grpc.StatusCode.UNAUTHENTICATED:
            print(
                f"infergate: give the admin token with --token or ${TOKEN_VARIABLE}",
                file=sys.stderr,
            )
        return 1


# ---- helpers ------------------------------------------------------------------------------


def _artifact_files(args: argparse.Namespace) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for flag, filename in _ARTIFACT_FLAGS.items():
        path = getattr(args, flag)
        if path is not None:
            files[filename] = path
    for item in args.file:
        filename, sep, path = item.partition("=")
        if not sep or not filename or not path:
            raise UsageError(f"--file wants NAME=PATH, got {item!r}")
        files[filename] = Path(path)
    if not files:
        raise UsageError("nothing to upload: give --onnx, --tflite or --file NAME=PATH")
    for filename, path in files.items():
        if not path.is_file():
            raise UsageError(f"{filename}: {path} is not a readable file")
    return files


def _read_config(path: Path) -> mc.ModelConfig:
    try:
        return parse_config(path.read_text(), str(path))
    except (OSError, ModelLoadError) as exc:
        raise UsageError(f"cannot use the config {path}: {exc}") from exc


def _client(args: argparse.Namespace) -> AdminClient:
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the token file: {exc}") from exc
    tls = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        if bool(args.tls_cert) != bool(args.tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        tls = Tls(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    try:
        return AdminClient(args.url, token, tls=tls, timeout_s=args.timeout_s)
    except OSError as exc:
        raise UsageError(f"cannot read a TLS file: {exc}") from exc


def _settings_line(config: mc.ModelConfig) -> str:
    parts = [f"max_batch_size {config.max_batch_size}"]
    if config.HasField("dynamic_batching"):
        b = config.dynamic_batching
        parts.append(f"batching on (delay {b.max_queue_delay_microseconds} us")
        if b.preferred_batch_size:
            parts[-1] += f", preferred {list(b.preferred_batch_size)}"
        if b.default_queue_policy.max_queue_size:
            parts[-1] += f", max queue {b.default_queue_policy.max_queue_size}"
        parts[-1] += ")"
    else:
        parts.append("batching off")
    cache = "on" if config.response_cache.enable else "off"
    if config.response_cache.enable and config.response_cache_ttl_ms:
        cache += f" (ttl {config.response_cache_ttl_ms} ms)"
    parts.append(f"cache {cache}")
    if config.routing.policy:
        parts.append(f"routing {config.routing.policy}")
    return "; ".join(parts)


def format_description(d: apb.DescribeModelResponse) -> str:
    lines = [f"{d.name}: {d.state}" + (f" ({d.reason})" if d.reason else "")]
    lines.append(f"  serving version: {d.serving_version or '-'}")
    lines.append(f"  settings: {_settings_line(d.config)}")
    for v in d.versions:
        lines.append(f"  version {v.version}: {v.state}" + (f" ({v.reason})" if v.reason else ""))
        for a in v.artifacts:
            lines.append(f"    {a.filename}  {a.size} bytes  sha256 {a.sha256}")
        if v.HasField("routing"):
            r = v.routing
            settings = ", ".join(f"{k}={val}" for k, val in sorted(r.settings.items()))
            lines.append(f"    routing: {r.policy}" + (f" ({settings})" if settings else ""))
            for backend, why in sorted(r.unavailable_backends.items()):
                lines.append(f"    backend {backend} left out: {why}")
        for variant in v.variants:
            figures = ", ".join(f"{k} {val:.4g}" for k, val in sorted(variant.figures.items()))
            lines.append(
                f"    variant {variant.backend}.{variant.variant}: {variant.status}"
                + (" (stale: its fp32 source changed)" if variant.stale else "")
                + (f"; {figures}" if figures else "")
            )
        for arm in v.arms:
            lat = arm.latency
            lines.append(
                f"    arm {arm.name}: {lat.batches} batches ({arm.share:.0%}), "
                f"mean {lat.mean_batch_ms:.2f} ms, {lat.mean_rows_per_batch:.1f} rows/batch; "
                f"model {lat.fixed_ms:.3f} ms + {lat.per_row_ms:.4f} ms/row; "
                f"p50 {lat.p50_ms:.2f} ms, p95 {lat.p95_ms:.2f} ms; "
                f"{arm.failures} failures, circuit {arm.circuit}"
                + (f" ({arm.last_error})" if arm.last_error else "")
            )
        if v.state == "READY":
            s, c = v.statistics, v.cache
            lines.append(
                f"    queue: {v.queue.depth} waiting, {v.queue.inflight_batches} batches running"
            )
            if v.HasField("execution"):
                lines.extend(_execution_lines(v.execution))
            lines.append(
                f"    requests: {s.success} ok, {s.fail} failed; {s.inference_count} rows in "
                f"{s.execution_count} batches; mean queue {s.mean_queue_ms:.2f} ms, "
                f"compute {s.mean_compute_ms:.2f} ms"
            )
            lines.append(
                f"    cache: {'on' if c.enabled else 'off'}, {c.hits} hits, {c.misses} misses "
                f"({c.hit_ratio:.0%})"
            )
    sc = d.shared_cache
    lines.append(
        f"  shared cache: {sc.entries} entries, {sc.bytes / 1e6:.1f} of "
        f"{sc.max_bytes / 1e6:.0f} MB, hit ratio {sc.hit_ratio:.0%}"
    )
    return "\n".join(lines)


def _execution_lines(e: apb.ExecutionChoice) -> list[str]:
    """What the gateway chose for how a version's batches run, and why."""
    threads = (
        "each runtime's own default"
        if e.intra_op_threads == 0
        else f"{e.intra_op_threads} intra-op thread{'s' if e.intra_op_threads != 1 else ''}"
    )
    inline = (
        "never on the event loop"
        if e.inline_below_us <= 0
        else f"on the event loop when a recent call took <= {e.inline_below_us:g} us "
        f"({e.inline_batches} so far)"
    )
    return [
        f"    execution: {e.max_inflight_batches} batch(es) in flight per device "
        f"({e.max_inflight_batches_reason})",
        f"    runtime calls: {threads} ({e.intra_op_threads_reason}); batches run {inline}",
    ]
