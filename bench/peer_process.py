"""Server processes the peer section starts besides infergate (Triton, the do-nothing
floor): a free port, a subprocess with its log, its CPU time (with its children's:
Triton runs each python-backend model in a stub process of its own), readiness
polled over gRPC, and a stop that leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.progress import log


class ServerError(RuntimeError):
    """A server did not start, or died while it was being measured."""


def free_port() -> int:
    """A port free on 127.0.0.1 now (another process may take it before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """`pid`'s children, theirs, and so on (Linux; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        # ppid is field 4 of stat(5), index 1 after the name.
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of `pid` and every live descendant; None off Linux."""
    total = 0.0
    seen = False
    for one in (pid, *descendants(pid)):
        fields = _stat_fields(one)
        if fields is None:
            continue
        # utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
        total += int(fields[11]) + int(fields[12])
        seen = True
    return total / os.sysconf("SC_CLK_TCK") if seen else None


@dataclass
class ServerProcess:
    """A running server subprocess, reached at `url`."""

    name: str
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
        return tree_cpu_seconds(self.process.pid)

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise ServerError(f"{self.name} exited with {code}:\n{self.log_tail()}")


def grpc_ready(url: str, models: Sequence[str], timeout_s: float = 2.0) -> bool:
    """Whether the server at `url` says it is ready, and each of `models` is (the
    generated stubs, so any server of the protocol answers)."""
    import grpc

    from infergate.protocol import inference_pb2 as pb
    from infergate.protocol import inference_pb2_grpc as pb_grpc

    try:
        with grpc.insecure_channel(url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            if not stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout_s).ready:
                return False
            return all(
                stub.ModelReady(pb.ModelReadyRequest(name=m), timeout=timeout_s).ready
                for m in models
            )
    except grpc.RpcError:  # not listening yet, or an error status: not ready
        return False


@contextmanager
def server_process(
    name: str,
    command: Sequence[str],
    log_path: Path,
    *,
    ready: Callable[[ServerProcess], bool],
    port: int = 0,
    port_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 180.0,
    stop_timeout_s: float = 30.0,
    after_stop: Callable[[], None] | None = None,
) -> Iterator[ServerProcess]:
    """Start `command` (its own process group, output to `log_path`), wait until
    `ready(server)`; on the way out SIGINT, then SIGKILL to the whole group after
    `stop_timeout_s`, then `after_stop`.

    The port is `port`, or read from `port_file` once the server writes it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if port_file is not None:
        port_file.unlink(missing_ok=True)
    log(f"starting {name}: {' '.join(command)}")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            list(command),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            process_group=0,
            env=dict(env) if env is not None else None,
        )
    server = ServerProcess(name, process, port, log_path, list(command))
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            server.check_alive()
            if server.port == 0 and port_file is not None and port_file.exists():
                text = port_file.read_text().strip()
                server.port = int(text) if text.isdigit() else 0
            if server.port and ready(server):
                break
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{name} not ready after {ready_timeout_s:.0f}s:\n{server.log_tail()}"
                )
            time.sleep(0.1)
        log(f"{name} ready on {server.url}")
        yield server
    finally:
        stop(process, stop_timeout_s, name)
        if port_file is not None:
            port_file.unlink(missing_ok=True)
        if after_stop is not None:
            after_stop()
        log(f"{name} stopped (exit code {process.returncode})")


def stop(process: subprocess.Popen[bytes], timeout_s: float, name: str) -> None:
    """SIGINT (a graceful stop for tritonserver, grpc servers and infergate alike),
    SIGKILL if the process outlives `timeout_s`; then any of its descendants still
    alive in its process group (python-backend stubs) are killed too."""
    children = descendants(process.pid) if process.poll() is None else []
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log(f"{name} ignored SIGINT for {timeout_s:.0f}s; killing it")
            process.kill()
            process.wait()
    for pid in children:
        try:
            if os.getpgid(pid) == process.pid:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
