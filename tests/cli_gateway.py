"""A gateway started through the CLI, as a user (or a hostile client) meets it.

For tests that need a real process: to read its memory and open files, send it
signals, or talk to it from clients that cannot share this interpreter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class CliGateway:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_mb(self) -> float:
        return _status_kb(self.process.pid, "VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        """The most memory it has held at once since it started (VmHWM)."""
        return _status_kb(self.process.pid, "VmHWM") / 1024

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def threads(self) -> int:
        return int(_status_kb(self.process.pid, "Threads"))


def _status_kb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    raise KeyError(key)


def gateway_command() -> list[str]:
    script = BIN / "infergate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "infergate.cli"]


@contextlib.contextmanager
def cli_gateway(
    workdir: Path, repository: Path, extra_args: Sequence[str] = (), grace_s: float = 2.0
) -> Iterator[CliGateway]:
    """`infergate serve` on a free port; stopped with SIGINT (and checked) on exit."""
    port_file = workdir / "port"
    port_file.unlink(missing_ok=True)
    log = workdir / "gateway.log"
    command = [
        *gateway_command(),
        "serve",
        "--model-repository",
        str(repository),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--shutdown-grace-s",
        str(grace_s),
        "--no-gpu",
        *extra_args,
    ]
    with log.open("wb") as log_file:
        # Its own process group: a Ctrl-C on pytest must not signal it twice.
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, process_group=0)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not port_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {proc.returncode} before it was ready:\n"
                    + log.read_text(errors="replace")
                )
            if time.monotonic() > deadline:
                raise RuntimeError("gateway not ready in time:\n" + log.read_text(errors="replace"))
            time.sleep(0.05)
        yield CliGateway(proc, int(port_file.read_text()), log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=grace_s + 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError(
                    "gateway still running after SIGINT:\n" + log.read_text(errors="replace")
                ) from None
            if proc.returncode != 0:
                raise RuntimeError(
                    f"gateway exited with {proc.returncode} after SIGINT:\n"
                    + log.read_text(errors="replace")
                )


@contextlib.contextmanager
def digits_with_admin_token(workdir: Path, token: str) -> Iterator[CliGateway]:
    """`infergate serve` of the demo `digits` on onnxruntime, its admin service behind
    `token` (INFERGATE_ADMIN_TOKEN, set only while it starts and runs)."""
    from tests.conftest import DEMO_REPOSITORY

    repository = workdir / "repository"
    shutil.copytree(DEMO_REPOSITORY / "digits", repository / "digits")
    os.environ["INFERGATE_ADMIN_TOKEN"] = token
    try:
        with cli_gateway(workdir, repository, ["--backends", "onnxruntime"]) as gateway:
            yield gateway
    finally:
        os.environ.pop("INFERGATE_ADMIN_TOKEN", None)
