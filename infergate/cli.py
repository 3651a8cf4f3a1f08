"""The `infergate` command: serve, infer, backends."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from infergate import cli_models
from infergate.settings import SETTING_SPECS, Settings, SettingsError, SettingSpec


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


_SERVE_EPILOG = (
    "Every setting is also read from INFERGATE_<NAME> in the environment, as "
    "INFERGATE_PORT for --port; a flag wins over the environment. Environment only: "
    + ", ".join(spec.env for spec in SETTING_SPECS if spec.flag is None)
    + "."
)


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every setting that has one, made from its declaration in Settings.

    Every flag defaults to None, meaning "not given", so that the environment's value
    (or the default) stays; help shows the setting's own default instead.
    """
    for spec in SETTING_SPECS:
        if spec.flag is None:
            continue
        if spec.choices is not None:
            parser.add_argument(
                spec.flag, dest=spec.name, choices=tuple(spec.choices), help=_flag_help(spec)
            )
        elif isinstance(spec.default, bool):
            # A bool flag switches its setting away from the default (--no-gpu).
            const = not spec.default
            parser.add_argument(
                spec.flag,
                dest=spec.name,
                action="store_const",
                const=const,
                help=_flag_help(spec, str(const).lower()),
            )
        else:
            parser.add_argument(spec.flag, dest=spec.name, type=spec.parse, help=_flag_help(spec))


def _flag_help(spec: SettingSpec, sets: str | None = None) -> str:
    """The setting's help, its default, and its variable where the flag is named apart."""
    notes = []
    if spec.shown_default is not None:
        notes.append(f"default: {spec.shown_default}")
    if spec.flag != "--" + spec.name.replace("_", "-"):
        notes.append(spec.env if sets is None else f"{spec.env}={sets}")
    text = spec.help + (f" ({'; '.join(notes)})" if notes else "")
    return text.replace("%", "%%")  # argparse %-formats help


def serve_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the environment, then the flags given (those left out are None)."""
    overrides: dict[str, object] = {}
    for spec in SETTING_SPECS:
        if spec.flag is None:
            continue
        value = getattr(args, spec.name)
        if value is not None and spec.choices is not None:
            value = spec.choices[value]
        overrides[spec.name] = value
    return Settings.from_env(environ).with_overrides(**overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infergate", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway.",
        epilog=_SERVE_EPILOG,
        # No prefixes: `--admin-token SECRET` must not be taken as --admin-token-file
        # (the secret would end up in `ps` and in an error message).
        allow_abbrev=False,
    )
    _add_setting_flags(serve)
    # Not a setting: where this run reports its port, for whoever started it.
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
    profile = sub.add_parser(
        "profile",
        help="measure every arm of a served model (same as `infergate models profile`)",
        parents=[cli_models.connection_arguments()],
    )
    cli_models.add_profile_arguments(profile)
    profile.set_defaults(run=cli_models.run, command_run=cli_models.run_profile)
    return parser


def _serve(args: argparse.Namespace) -> int:
    settings = serve_settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        from infergate.gateway.server import GatewayServer
    except ModuleNotFoundError as exc:
        # `pip install infergate` is the client alone; the gateway's libraries and
        # runtimes come with the extra.
        print(
            f"infergate: serving needs the gateway's libraries ({exc.name} is not installed): "
            "pip install 'infergate[server]'",
            file=sys.stderr,
        )
        return 1

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
        with asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner:
            runner.run(run())
    except RuntimeError as exc:
        print(f"infergate: {exc}", file=sys.stderr)
        return 1
    return 0


def event_loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop `serve` runs on: uvloop's when asked for or (auto) installed; None:
    asyncio's own."""
    if settings.event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if settings.event_loop == "uvloop":
            raise SettingsError(
                "event_loop uvloop: uvloop is not installed (pip install 'infergate[server]')"
            ) from None
        return None
    return uvloop.new_event_loop


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
