"""deploy/haproxy/haproxy.cfg in front of two real gateways (started through the CLI):
the calls of one client connection land on both replicas, a replica that stops
answering SERVING leaves the rotation, and a replica that dies costs no call."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from infergate.clients import build_request
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from tests.cli_gateway import cli_gateway
from tests.scaleout import h2_probe
from tests.scaleout.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
UP, DOWN = "2", "0"  # srv_op_state in `show servers state`

# Installed by `make test` (make system-deps); missing, these tests fail, not skip.
needs_haproxy = pytest.mark.usefixtures("haproxy_installed")


class Haproxy:
    def __init__(
        self, workdir: Path, gateways: tuple[str, str], check_interval: str | None = None
    ) -> None:
        self.port = free_port()
        self.socket = workdir / "haproxy.sock"
        self.log = workdir / "haproxy.log"
        # The tests' own additions: the stats socket they read server states from.
        extra = workdir / "test-extra.cfg"
        extra.write_text(f"global\n    stats socket {self.socket} mode 600 level admin\n")
        env = {
            **os.environ,
            "INFERGATE_PROXY_BIND": f"127.0.0.1:{self.port}",
            "INFERGATE_PROXY_METRICS_BIND": f"127.0.0.1:{free_port()}",
            "INFERGATE_GATEWAY_1": gateways[0],
            "INFERGATE_GATEWAY_2": gateways[1],
        }
        if check_interval is not None:  # the config's default: 1s
            env["INFERGATE_PROXY_CHECK_INTERVAL"] = check_interval
        assert HAPROXY is not None
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(CONFIG), "-f", str(extra)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def states(self) -> dict[str, str]:
        """Each server's operational state, from the stats socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket))
            s.sendall(b"show servers state infergate\n")
            text = b""
            while chunk := s.recv(65536):
                text += chunk
        rows = [line.split() for line in text.decode().splitlines()[1:] if line and line[0] != "#"]
        return {row[3]: row[5] for row in rows}

    async def wait_for(self, wanted: dict[str, str], timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("haproxy exited:\n" + self.log.read_text())
            with contextlib.suppress(OSError):
                states = self.states()
                if all(states.get(name) == state for name, state in wanted.items()):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"servers not {wanted}:\n{self.log.read_text()}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def haproxy(
    workdir: Path, gateways: tuple[str, str], check_interval: str | None = None
) -> Iterator[Haproxy]:
    workdir.mkdir(exist_ok=True)
    proxy = Haproxy(workdir, gateways, check_interval)
    try:
        yield proxy
    finally:
        proxy.stop()


async def successes(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="digits"))
    return int(stats.model_stats[0].inference_stats.success.count)


async def infer_many(channel: grpc.aio.Channel, count: int, seed: int) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    rng = np.random.default_rng(seed)
    for _ in range(count):
        x = rng.random((1, 64), dtype=np.float32)  # every one different: no cache hits
        response = await stub.ModelInfer(build_request("digits", {"x": x}), timeout=10)
        assert len(response.raw_output_contents) == 1


def test_the_configured_check_is_a_grpc_health_check_for_serving() -> None:
    sent, expected = h2_probe.config_check(CONFIG.read_text())
    assert sent == h2_probe.health_check_request()
    assert expected == h2_probe.health_check_answer(h2_probe.SERVING)
    # It first waits for the answer whatever its status, so that NOT_SERVING fails
    # at once (min-recv) instead of after the check's timeout.
    frame = h2_probe.config_frame_pattern(CONFIG.read_text())
    for status in (h2_probe.SERVING, h2_probe.NOT_SERVING):
        assert frame.search(h2_probe.health_check_answer(status).hex())
    assert "min-recv" in CONFIG.read_text()


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[int, health.aio.HealthServicer]]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, servicer
    finally:
        await server.stop(0)


async def raw_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    received = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while chunk := await reader.read(65536):
                received += chunk
                if b"grpc-status" in received:
                    break
    writer.close()
    return received


async def test_the_check_bytes_tell_serving_from_not_serving_on_a_real_grpc_server(
    health_server: tuple[int, health.aio.HealthServicer],
) -> None:
    port, servicer = health_server
    request = h2_probe.health_check_request()
    serving = h2_probe.health_check_answer(h2_probe.SERVING)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert serving in await raw_exchange(port, request)
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    answer = await raw_exchange(port, request)
    assert h2_probe.health_check_answer(h2_probe.NOT_SERVING) in answer
    assert serving not in answer


@needs_haproxy
def test_the_shipped_config_is_valid() -> None:
    assert HAPROXY is not None
    env = {
        **os.environ,
        "INFERGATE_GATEWAY_1": "127.0.0.1:1",
        "INFERGATE_GATEWAY_2": "127.0.0.1:2",
    }
    done = subprocess.run(
        [HAPROXY, "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_haproxy
async def test_one_connections_calls_land_on_both_replicas_and_survive_one_dying(
    tmp_path: Path, repository: Path
) -> None:
    with contextlib.ExitStack() as stack:
        gateways = []
        for name in ("one", "two"):
            workdir = tmp_path / name
            workdir.mkdir()
            gateways.append(stack.enter_context(cli_gateway(workdir, repository)))
        first, second = gateways
        proxy = stack.enter_context(haproxy(tmp_path / "proxy", (first.url, second.url)))
        await proxy.wait_for({"gateway-1": UP, "gateway-2": UP})
        async with grpc.aio.insecure_channel(proxy.address) as channel:
            await infer_many(channel, 40, seed=1)
            counts = [await successes(first.url), await successes(second.url)]
            assert sum(counts) == 40
            assert min(counts) >= 10, counts  # least-connections: about even

            # A replica dies: its calls go to the other; the client sees no error.
            second.process.send_signal(signal.SIGKILL)
            second.process.wait()
            await infer_many(channel, 20, seed=2)
            await proxy.wait_for({"gateway-2": DOWN})
            await infer_many(channel, 20, seed=3)
        assert await successes(first.url) == counts[0] + 40


@needs_haproxy
async def test_a_replica_not_serving_gets_no_calls(
    tmp_path: Path, repository: Path, health_server: tuple[int, health.aio.HealthServicer]
) -> None:
    # The second "replica" answers health checks NOT_SERVING, as a gateway does while
    # it loads its repository or drains; it serves nothing else.
    port, servicer = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    workdir = tmp_path / "one"
    workdir.mkdir()
    with (
        cli_gateway(workdir, repository) as gateway,
        haproxy(tmp_path / "proxy", (gateway.url, f"127.0.0.1:{port}")) as proxy,
    ):
        await proxy.wait_for({"gateway-1": UP, "gateway-2": DOWN})
        async with grpc.aio.insecure_channel(proxy.address) as channel:
            await infer_many(channel, 20, seed=4)
        assert await successes(gateway.url) == 20
        # Once it reports SERVING it is back in the rotation.
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await proxy.wait_for({"gateway-2": UP})
