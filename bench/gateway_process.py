"""A gateway under measurement: `infergate serve` as a subprocess, started and stopped.

The gateway is started through its CLI (`infergate serve --port 0 --port-file F`), as a
user would, so a benchmark measures what a user runs. Nothing here imports tritonclient
or infergate.protocol, so a benchmark may drive it with either.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.progress import log

BIN = Path(sys.executable).parent
METRICS_OFF = ("--metrics-port", "0")


class GatewayError(RuntimeError):
    """The gateway did not start, or died while it was being measured."""


@dataclass
class Gateway:
    """A running `infergate serve` subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    command: list[str]

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the gateway process has used so far; None off Linux.

        Per request, it is a cost that a busy machine disturbs far less than throughput.
        """
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise GatewayError(f"gateway exited with {code}:\n{self.log_tail()}")


def gateway_command() -> list[str]:
    script = BIN / "infergate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "infergate.cli"]


def serve_command(
    repository: Path, port_file: Path, *serve_args: str, program: Sequence[str] | None = None
) -> list[str]:
    """`infergate serve` of `repository` on a free port, written to `port_file` once
    ready; `program` replaces the `infergate` command (an interpreter and -m, say)."""
    return [
        *(gateway_command() if program is None else program),
        "serve",
        "--model-repository",
        str(repository),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        *serve_args,
    ]


@contextmanager
def gateway(
    repository: Path,
    log_path: Path,
    *,
    serve_args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    ready_timeout_s: float = 120.0,
    grace_s: float = 5.0,
) -> Iterator[Gateway]:
    """Start `infergate serve` on a free port; stop it with SIGINT on the way out.

    `env` changes the gateway's environment (this process's, by default): a str sets
    a variable, None removes it (the OTEL_* variables that turn tracing on, say).
    Prometheus metrics are off (`--metrics-port 0`) unless serve_args name a port,
    so that gateways never fight over the default one.

    The gateway is stopped however the block ends, Ctrl-C included; if it ignores
    SIGINT for `grace_s` + 10 s it is killed.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port_file = log_path.with_suffix(".port")
    port_file.unlink(missing_ok=True)
    command = serve_command(
        repository,
        port_file,
        "--shutdown-grace-s",
        str(grace_s),
        *([] if any(a.startswith("--metrics-port") for a in serve_args) else METRICS_OFF),
        *serve_args,
    )
    environ = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    shown = " ".join(f"{k}={v}" for k, v in (env or {}).items() if v is not None)
    log(f"starting gateway: {shown + ' ' if shown else ''}{shlex.join(command)}")
    with log_path.open("wb") as log_file:
        # A process group of its own: a terminal's Ctrl-C reaches only this process,
        # which then stops the gateway with one SIGINT (a second one, arriving while
        # it shuts down, would end it with 130 instead of 0).
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, process_group=0, env=environ
        )
    gw = Gateway(process=process, port=0, log_path=log_path, command=command)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not port_file.exists():
            gw.check_alive()
            if time.monotonic() > deadline:
                raise GatewayError(
                    f"gateway not ready after {ready_timeout_s:.0f}s:\n{gw.log_tail()}"
                )
            time.sleep(0.05)
        gw.port = int(port_file.read_text())
        log(f"gateway ready on {gw.url}")
        yield gw
    finally:
        stop_process(process, grace_s)
        port_file.unlink(missing_ok=True)
        log(f"gateway stopped (exit code {process.returncode})")


def stop_process(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGINT, then SIGKILL if the process has not exited within grace_s + 10 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace_s + 10)
    except subprocess.TimeoutExpired:
        log(f"process {process.pid} ignored SIGINT; killing it")
        process.kill()
        process.wait()


# ---- several gateways compared in rounds ------------------------------------------------


@contextmanager
def start_gateways(
    repository: Path,
    environments: Mapping[str, Mapping[str, str | None]],
    log_path: Callable[[str], Path],
    *,
    serve_args: Sequence[str] = (),
) -> Iterator[dict[str, Gateway]]:
    """One gateway per mode, each with its environment (see gateway's `env`), all on
    one repository; all are stopped when the block ends. Benches that compare modes
    start them afresh every round: a gateway process keeps a speed of its own for
    its life, so one process per mode for a whole run reads that luck as a cost."""
    with ExitStack() as stack:
        yield {
            mode: stack.enter_context(
                gateway(repository, log_path(mode), serve_args=serve_args, env=env)
            )
            for mode, env in environments.items()
        }


T = TypeVar("T")


def in_turn(items: Sequence[T], round_index: int) -> Sequence[T]:
    """The order to measure in: reversed every other round, so that drift within a
    round favours no mode."""
    return items if round_index % 2 == 0 else items[::-1]
