"""The `infergate` command, run as a user would: a real process, real signals."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from infergate.cli import main
from infergate.settings import SETTING_SPECS, Settings
from tests.test_settings import sample

BIN = Path(sys.executable).parent / "infergate"


@pytest.fixture
def served(repository: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            str(BIN),
            "serve",
            "--model-repository",
            str(repository),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--shutdown-grace-s",
            "2",
            "--drain-s",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"gateway did not start:\n{process.communicate()[0]}")
        time.sleep(0.05)
    try:
        yield process, int(port_file.read_text())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_infer_then_stop_gracefully_on_sigterm(
    served: tuple[subprocess.Popen[str], int], tmp_path: Path
) -> None:
    process, port = served
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 64), np.float32))
    saved = tmp_path / "out.npz"
    result = subprocess.run(
        [
            str(BIN),
            "infer",
            "digits",
            "--url",
            f"127.0.0.1:{port}",
            "--input",
            f"x={x}",
            "--save",
            str(saved),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "y: float32 [2, 10]" in result.stdout
    assert np.load(saved)["y"].shape == (2, 10)

    bad = subprocess.run(
        [str(BIN), "infer", "nope", "--url", f"127.0.0.1:{port}", "--input", f"x={x}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    unreadable = subprocess.run(
        [str(BIN), "infer", "digits", "--url", f"127.0.0.1:{port}", "--input", f"x={empty}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreadable.returncode == 2 and "cannot read" in unreadable.stderr

    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "SIGTERM received: stopping (drain 0.5s" in output and "infergate stopped" in output


def test_backends_command_lists_onnxruntime_on_cpu() -> None:
    result = subprocess.run(
        [str(BIN), "backends", "--json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["onnxruntime"]["available"] is True
    assert rows["onnxruntime"]["devices"] == ["cpu"]


def test_a_negative_inline_threshold_is_a_clear_error() -> None:
    result = subprocess.run(
        [str(BIN), "serve", "--port", "0", "--metrics-port", "0", "--inline-below-us", "-5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "inline_below_us must be >= 0" in result.stderr and "Traceback" not in result.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # As `infergate backends | head -c 0` would: the pipe's read end is closed
    # before the command writes its table.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [str(BIN), "backends"], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr


def test_a_taken_port_is_a_clear_error(served: tuple[subprocess.Popen[str], int]) -> None:
    _, port = served
    result = subprocess.run(
        [str(BIN), "serve", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "INFERGATE_LOG_LEVEL": "ERROR"},
    )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_a_bad_environment_value_is_a_clear_error() -> None:
    result = subprocess.run(
        [str(BIN), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "INFERGATE_PORT": "eighty"},
    )
    assert result.returncode == 2 and "INFERGATE_PORT" in result.stderr


def test_the_tracing_flag_parses_to_the_setting() -> None:
    from infergate.cli import _parser

    parser = _parser()
    assert parser.parse_args(["serve", "--tracing", "on"]).tracing == "on"
    assert parser.parse_args(["serve"]).tracing is None
    result = subprocess.run(
        [str(BIN), "serve", "--tracing", "maybe"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--tracing" in result.stderr


def test_serve_sets_the_gil_switch_interval_from_settings() -> None:
    from infergate.cli import apply_gil_switch_interval
    from infergate.settings import Settings, SettingsError

    before = sys.getswitchinterval()
    try:
        apply_gil_switch_interval(Settings(gil_switch_interval_us=1234))
        assert sys.getswitchinterval() == pytest.approx(0.001234)
        apply_gil_switch_interval(Settings(gil_switch_interval_us=0))  # 0: left as it is
        assert sys.getswitchinterval() == pytest.approx(0.001234)
        with pytest.raises(SettingsError, match="gil_switch_interval_us"):
            apply_gil_switch_interval(Settings(gil_switch_interval_us=-1))
    finally:
        sys.setswitchinterval(before)


# Every `serve` flag as it was before the flags were derived from Settings: none may
# go missing or change its name, and a new one shows up here.
SERVE_FLAGS = {
    "--host",
    "--port",
    "--model-repository",
    "--backends",
    "--worker-threads",
    "--max-inflight-batches",
    "--inline-below-us",
    "--execution-timeout-s",
    "--response-cache-mb",
    "--cache-redis-url",
    "--cache-redis-ttl-s",
    "--cache-redis-timeout-ms",
    "--cache-redis-connect-timeout-ms",
    "--cache-redis-retry-s",
    "--cache-redis-invalidation-lag-s",
    "--registry-redis-url",
    "--replica-id",
    "--registry-heartbeat-s",
    "--registry-resync-s",
    "--intra-op-threads",
    "--inter-op-threads",
    "--event-loop",
    "--max-receive-message-mb",
    "--max-send-message-mb",
    "--shutdown-grace-s",
    "--drain-s",
    "--max-connection-age-s",
    "--max-connection-age-grace-s",
    "--default-max-batch-size",
    "--no-gpu",
    "--gil-switch-interval-us",
    "--metrics-port",
    "--metrics-host",
    "--admin-token-file",
    "--insecure-admin",
    "--inference-token",
    "--inference-token-file",
    "--max-artifact-mb",
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--tracing",
    "--log-level",
    "--port-file",  # the CLI's own, not a setting
}


def serve_parser() -> argparse.ArgumentParser:
    from infergate.cli import _parser

    subparsers = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = subparsers.choices["serve"]
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def test_serve_has_exactly_its_flags_each_with_help() -> None:
    actions = [a for a in serve_parser()._actions if not isinstance(a, argparse._HelpAction)]
    assert {flag for a in actions for flag in a.option_strings} == SERVE_FLAGS
    for action in actions:
        assert action.help and action.help.strip(), f"{action.option_strings} has no help"
    helps = {a.option_strings[0]: a.help for a in actions}
    assert "(default: 8001)" in str(helps["--port"])
    assert "INFERGATE_USE_GPU=false" in str(helps["--no-gpu"])


def test_every_setting_with_a_flag_is_in_serve() -> None:
    dests = {a.dest for a in serve_parser()._actions}
    for spec in SETTING_SPECS:
        assert spec.flag is None or spec.name in dests, f"{spec.name} has no flag"


@pytest.mark.parametrize("name", [spec.name for spec in SETTING_SPECS if spec.flag is not None])
def test_a_flag_overrides_the_environment_which_overrides_the_default(name: str) -> None:
    from infergate.cli import _parser, serve_settings

    spec = next(s for s in SETTING_SPECS if s.name == name)
    assert spec.flag is not None
    env_raw, env_value = sample(name, "env")
    default = serve_settings(_parser().parse_args(["serve"]), {})
    assert getattr(default, name) == spec.default
    from_env = serve_settings(_parser().parse_args(["serve"]), {spec.env: env_raw})
    assert getattr(from_env, name) == env_value != spec.default
    if isinstance(spec.default, bool):
        # A switch only turns its setting away from the default: the environment
        # turns it back, the flag wins.
        argv, env, flag_value = [spec.flag], {spec.env: str(spec.default).lower()}, env_value
    else:
        flag_raw, flag_value = sample(name, "flag")
        argv, env = [spec.flag, flag_raw], {spec.env: env_raw}
        assert flag_value != env_value
    assert getattr(serve_settings(_parser().parse_args(["serve", *argv]), env), name) == (
        flag_value
    )


def test_flags_keep_their_meanings() -> None:
    from infergate.cli import _parser, serve_settings

    args = _parser().parse_args(
        [
            "serve",
            "--no-gpu",
            "--insecure-admin",
            "--backends",
            "onnxruntime,openvino",
            "--tracing",
            "off",
            "--tls-cert",
            "cert.pem",
            "--shutdown-grace-s",
            "2.5",
            "--port-file",
            "port.txt",
        ]
    )
    settings = serve_settings(args, {})
    assert settings.use_gpu is False and settings.insecure_admin is True
    assert settings.backends == ("onnxruntime", "openvino") and settings.tracing is False
    assert settings.tls_cert == Path("cert.pem") and settings.shutdown_grace_s == 2.5
    assert args.port_file == Path("port.txt")
    unset = serve_settings(_parser().parse_args(["serve"]), {})
    assert unset == Settings()


def test_a_bad_flag_value_is_argparses_error(capsys: pytest.CaptureFixture[str]) -> None:
    from infergate.cli import _parser

    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--port", "eighty"])
    assert "argument --port: invalid int value: 'eighty'" in capsys.readouterr().err


def test_serve_takes_no_abbreviated_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """`--admin-token SECRET` is no flag: it must not become --admin-token-file SECRET."""
    with pytest.raises(SystemExit):
        main(["serve", "--admin-token", "s3cret-value"])
    assert "unrecognized arguments" in capsys.readouterr().err
