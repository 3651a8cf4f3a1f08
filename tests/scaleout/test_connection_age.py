"""--max-connection-age-s: the server sends each connection GOAWAY after about that
long, the client reconnects (behind an L4 balancer, perhaps to another replica), and
no call fails on the way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from infergate.gateway.server import GatewayServer, _connection_age_options
from infergate.protocol import inference_pb2 as pb
from infergate.protocol import inference_pb2_grpc as pb_grpc
from infergate.settings import Settings, SettingsError


class CountingRelay:
    """A TCP relay to the gateway that counts the connections clients open through it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()


async def gateway_behind_relay(age_s: float) -> AsyncIterator[tuple[GatewayServer, CountingRelay]]:
    server = GatewayServer(
        Settings(
            metrics_port=0,
            port=0,
            shutdown_grace_s=1.0,
            max_connection_age_s=age_s,
            max_connection_age_grace_s=1.0,
        )
    )
    await server.start()
    relay = CountingRelay(server.port)
    await relay.start()
    try:
        yield server, relay
    finally:
        await relay.stop()
        await server.stop()


async def calls_for(seconds: float, port: int) -> int:
    """Calls made one after another over one client channel; all must succeed."""
    done = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            response = await stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
            assert response.live
            done += 1
            await asyncio.sleep(0.01)
    return done


@pytest.fixture
async def aged() -> AsyncIterator[tuple[GatewayServer, CountingRelay]]:
    async for pair in gateway_behind_relay(age_s=0.3):
        yield pair


@pytest.fixture
async def unaged() -> AsyncIterator[tuple[GatewayServer, CountingRelay]]:
    async for pair in gateway_behind_relay(age_s=0.0):
        yield pair


async def test_a_client_reconnects_after_goaway_and_every_call_succeeds(
    aged: tuple[GatewayServer, CountingRelay],
) -> None:
    _, relay = aged
    done = await calls_for(1.6, relay.port)
    assert done > 20
    # About one connection per 0.3 s (+-10% jitter, plus reconnect time).
    assert 3 <= relay.connections <= 8, relay.connections


async def test_without_an_age_one_connection_serves_every_call(
    unaged: tuple[GatewayServer, CountingRelay],
) -> None:
    _, relay = unaged
    await calls_for(0.8, relay.port)
    assert relay.connections == 1


def test_the_options_grpc_gets() -> None:
    assert _connection_age_options(Settings()) == []
    assert _connection_age_options(Settings(max_connection_age_s=300)) == [
        ("grpc.max_connection_age_ms", 300_000)
    ]
    assert _connection_age_options(
        Settings(max_connection_age_s=300, max_connection_age_grace_s=30)
    ) == [("grpc.max_connection_age_ms", 300_000), ("grpc.max_connection_age_grace_ms", 30_000)]
    with pytest.raises(SettingsError):
        _connection_age_options(Settings(max_connection_age_s=-1))
