"""The `infergate` command: serve, infer, backends."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infergate import cli_models
from infergate.settings import Settings, SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except SettingsError as exc:
        print(f"infergate: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`infergate infer ... | head`): stop quietly, as Unix
        # tools do; output still buffered would fail again at exit, so it goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infergate", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--model-repository", type=Path, help="folder of models to serve")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8001; 0 picks one)")
    serve.add_argument("--backends", help="comma-separated backends to use (default: all)")
    serve.add_argument("--worker-threads", type=int)
    serve.add_argument("--max-inflight-batches", type=int)
    serve.add_argument(
        "--inline-below-us",
        type=int,
        help="run a batch on the event loop, not a worker thread, when its arm's fastest "
        "recent call took at most this long (default 200; 0: never)",
    )
    serve.add_argument("--response-cache-mb", type=int)
    serve.add_argument("--intra-op-threads", type=int)
    serve.add_argument("--inter-op-threads", type=int)
    serve.add_argument("--max-receive-message-mb", type=int)
    serve.add_argument("--max-send-message-mb", type=int)
    serve.add_argument("--shutdown-grace-s", type=float)
    serve.add_argument("--default-max-batch-size", type=int)
    serve.add_argument("--no-gpu", action="store_true", help="never use GPU providers")
    serve.add_argument(
        "--gil-switch-interval-us",
        type=int,
        help="longest a busy event loop keeps a runtime thread waiting for the GIL "
        "(default 250; 0: Python's 5000)",
    )
    serve.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics port (default 8002; 0: off)"
    )
    serve.add_argument("--metrics-host", help="address for /metrics (default 127.0.0.1)")
    # Admin RPC and security (docs/admin.md); the admin token itself comes from
    # INFERGATE_ADMIN_TOKEN or a file, never from a flag that `ps` would show.
    serve.add_argument("--admin-token-file", type=Path, help="file holding the admin token")
    serve.add_argument(
        "--insecure-admin",
        action="store_true",
        help="allow admin calls without a token (loopback addresses only)",
    )
    serve.add_argument("--inference-token", help="require this bearer token for inference")
    serve.add_argument("--inference-token-file", type=Path, help="file holding that token")
    serve.add_argument("--max-artifact-mb", type=int, help="largest artifact to accept (2048)")
    serve.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    serve.add_argument("--tls-client-ca", type=Path, help="require client certificates it signed")
    serve.add_argument(
        "--tracing",
        choices=("on", "off"),
        help="force tracing on or off (default: on when OTEL_EXPORTER_OTLP_ENDPOINT is set)",
    )
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    serve.add_argument("--port-file", type=Path, help="write the bound port here once ready")
    serve.set_defaults(run=_serve)

    infer = sub.add_parser("infer", help="send one inference request")
    infer.add_argument("model")
    infer.add_argument("--url", default="127.0.0.1:8001", help="gateway address host:port")
    infer.add_argument("--version", default="")
    infer.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="an input tensor from a .npy file; repeat for each input",
    )
    infer.add_argument("--output", action="append", default=[], help="output to return")
    infer.add_argument("--save", type=Path, help="write outputs to this .npz file")
    infer.add_argument("--timeout-s", type=float, default=30.0)
    infer.set_defaults(run=_infer)

    backends = sub.add_parser("backends", help="list the backends found here")
    backends.add_argument("--json", action="store_true")
    backends.set_defaults(run=_backends)

    cli_models.add_parser(sub)
    return parser


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_overrides(
        model_repository=args.model_repository,
        host=args.host,
        port=args.port,
        backends=tuple(b for b in args.backends.split(",") if b) if args.backends else None,
        worker_threads=args.worker_threads,
        max_inflight_batches=args.max_inflight_batches,
        inline_below_us=args.inline_below_us,
        response_cache_mb=args.response_cache_mb,
        intra_op_threads=args.intra_op_threads,
        inter_op_threads=args.inter_op_threads,
        max_receive_message_mb=args.max_receive_message_mb,
        max_send_message_mb=args.max_send_message_mb,
        shutdown_grace_s=args.shutdown_grace_s,
        default_max_batch_size=args.default_max_batch_size,
        use_gpu=False if args.no_gpu else None,
        gil_switch_interval_us=args.gil_switch_interval_us,
        log_level=args.log_level,
        admin_token_file=args.admin_token_file,
        insecure_admin=True if args.insecure_admin else None,
        inference_token=args.inference_token,
        inference_token_file=args.inference_token_file,
        max_artifact_mb=args.max_artifact_mb,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        tracing=None if args.tracing is None else args.tracing == "on",
    )
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from infergate.gateway.server import GatewayServer

    apply_gil_switch_interval(settings)

    async def run() -> None:
        server = GatewayServer(settings)
        if args.port_file is None:
            await server.serve()
            return

        # Tests and scripts that start on port 0 learn the port from this file,
        # written only once the server is ready.
        async def announce() -> None:
            while not server.ready:
                await asyncio.sleep(0.05)
            tmp = args.port_file.with_suffix(".tmp")
            tmp.write_text(str(server.port))
            tmp.replace(args.port_file)

        announcer = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            announcer.cancel()

    try:
        asyncio.run(run())
    except RuntimeError as exc:
        print(f"infergate: {exc}", file=sys.stderr)
        return 1
    return 0


def apply_gil_switch_interval(settings: Settings) -> None:
    """Set the interpreter's switch interval (the serving process is the gateway's own)."""
    interval_us = settings.gil_switch_interval_us
    if interval_us < 0:
        raise SettingsError(
            f"gil_switch_interval_us must be >= 0 (0 keeps Python's default), not {interval_us}"
        )
    if interval_us:
        sys.setswitchinterval(interval_us / 1e6)


def _infer(args: argparse.Namespace) -> int:
    from infergate.clients import Client, InferenceError

    inputs: dict[str, np.ndarray] = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep:
            print(f"infergate: --input wants NAME=FILE.npy, got {item!r}", file=sys.stderr)
            return 2
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
            print(f"infergate: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    with Client(args.url, timeout_s=args.timeout_s) as client:
        try:
            outputs = client.infer(
                args.model, inputs, outputs=args.output or None, version=args.version
            )
        except InferenceError as exc:
            print(f"infergate: {exc}", file=sys.stderr)
            return 1
    for name, array in outputs.items():
        print(f"{name}: {array.dtype} {list(array.shape)}")
        with np.printoptions(threshold=20, precision=4):
            print(array)
    if args.save:
        np.savez(args.save, **outputs)  # type: ignore[arg-type]
    return 0


def _backends(args: argparse.Namespace) -> int:
    from infergate.backends.discovery import discover

    found = discover()
    if args.json:
        rows: list[dict[str, object]] = [
            {
                "name": name,
                "available": True,
                "version": b.version(),
                "devices": b.devices(),
                "artifacts": list(b.artifact_names),
            }
            for name, b in found.backends.items()
        ]
        rows += [
            {"name": u.name, "available": False, "reason": u.reason} for u in found.unavailable
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for name, b in found.backends.items():
        print(
            f"{name:<12} {b.version():<10} devices={','.join(b.devices())} "
            f"artifacts={','.join(b.artifact_names)}"
        )
    for u in found.unavailable:
        print(f"{u.name:<12} unavailable: {u.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
