"""After a restart, exactly the registrations that completed are served.

Crashes are simulated two ways: by leaving on disk what a registration cut short at
each step of the commit protocol would leave, and by killing a real gateway process
(SIGKILL) in the middle of an upload.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from infergate.clients import AsyncClient, Client
from infergate.clients.admin_client import (
    AdminClient,
    AdminError,
    Artifact,
    AsyncAdminClient,
    batching,
    registration_messages,
)
from infergate.gateway.core import store
from infergate.gateway.core.repository import parse_config
from infergate.protocol import admin_pb2 as apb
from infergate.protocol import admin_pb2_grpc as apb_grpc
from tests.admin.conftest import TOKEN, start
from tests.admin.payloads import DIGITS_ONNX, row, scale_model


async def test_registered_models_and_their_settings_come_back(repo: Path, tmp_path: Path) -> None:
    server = await start(repo)
    try:
        async with AsyncAdminClient(server.address, TOKEN) as admin:
            await admin.register("scale", {"model.onnx": scale_model(tmp_path / "1.onnx", 1.0)})
            await admin.register("scale", {"model.onnx": scale_model(tmp_path / "2.onnx", 3.0)})
            await admin.update("scale", batching(max_queue_delay_us=1500, cache=True))
            await admin.register("mnist", {"model.onnx": DIGITS_ONNX})
            await admin.register("gone", {"model.onnx": DIGITS_ONNX})
            await admin.unregister("gone")
            await admin.register("kept", {"model.onnx": DIGITS_ONNX})
            await admin.unregister("kept", keep_files=True)
    finally:
        await server.stop()

    server = await start(repo)
    try:
        index = {(r.name, r.version, r.state) for r in server.core.registry.index()}
        assert index == {
            ("digits", "1", "READY"),
            ("scale", "2", "READY"),
            ("mnist", "1", "READY"),
            ("kept", "1", "READY"),  # its files stayed, so it loads again
        }
        config = server.core.model("scale").config
        assert config.dynamic_batching.max_queue_delay_microseconds == 1500
        assert config.response_cache.enable
        async with AsyncClient(server.address) as client:
            y = (await client.infer("scale", {"x": row(2.0)}))["y"]
            np.testing.assert_array_equal(y, row(6.0))
    finally:
        await server.stop()


def _leave_crash_debris(repo: Path) -> None:
    """What registrations killed at each step of store.commit_version leave behind."""
    staging = repo / ".staging"
    # Killed while uploading: a half-written artifact.
    upload = staging / "upload-killed"
    upload.mkdir(parents=True)
    (upload / "model.onnx").write_bytes(DIGITS_ONNX.read_bytes()[:1000])
    # A new model assembled but not yet renamed into the repository.
    assembled = staging / "model-killed"
    shutil.copytree(repo / "digits", assembled)
    # A new version whose pending config was written, but not its folder: dropped.
    (repo / "digits" / ".pending-2.pbtxt").write_text("max_batch_size: 2\n")
    # A new version renamed into place, its config not yet swapped: finished.
    scale_model(repo / "scale" / "1" / "model.onnx", 1.0)
    (repo / "scale" / "config.pbtxt").write_text("max_batch_size: 4\n")
    scale_model(repo / "scale" / "2" / "model.onnx", 5.0)
    (repo / "scale" / ".pending-2.pbtxt").write_text("max_batch_size: 16\n")
    # A config update killed before its os.replace.
    (repo / "scale" / ".tmp-abc123").write_text("max_batch_size: [broken")


async def test_a_crash_at_any_step_leaves_old_or_new_state_never_a_mix(repo: Path) -> None:
    _leave_crash_debris(repo)
    server = await start(repo)
    try:
        index = {(r.name, r.version, r.state) for r in server.core.registry.index()}
        assert index == {("digits", "1", "READY"), ("scale", "2", "READY")}
        assert server.core.model("digits").config.max_batch_size == 64  # the old config
        assert server.core.model("scale").config.max_batch_size == 16  # rolled forward
        assert not (repo / ".staging").exists()
        leftovers = [p.name for p in repo.rglob(".*")]
        assert leftovers == []
        async with AsyncClient(server.address) as client:
            y = (await client.infer("scale", {"x": row(1.0)}))["y"]
            np.testing.assert_array_equal(y, row(5.0))
    finally:
        await server.stop()


def test_recover_reports_what_it_did(repo: Path) -> None:
    _leave_crash_debris(repo)
    done = store.recover(repo)
    assert any("unfinished uploads" in d for d in done)
    assert any("scale: finished the config of version 2" in d for d in done)
    assert any("digits: deleted .pending-2.pbtxt" in d for d in done)
    assert store.recover(repo) == []  # nothing left to do


# ---- a real process, killed in the middle of an upload ---------------------------------

_ENV = {**os.environ, "INFERGATE_ADMIN_TOKEN": TOKEN}


def _serve_command(repo: Path, port_file: Path) -> list[str]:
    return [
        str(Path(sys.executable).parent / "infergate"),
        "serve",
        "--model-repository",
        str(repo),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--metrics-port",
        "0",
        "--backends",
        "onnxruntime",
        "--no-gpu",
    ]


@pytest.fixture
def gateway_process(repo: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port_file = tmp_path / "port"
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        _serve_command(repo, port_file), stdout=log, stderr=subprocess.STDOUT, env=_ENV
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.05)
        yield process, f"127.0.0.1:{port_file.read_text()}"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


def test_a_gateway_killed_mid_upload_serves_nothing_of_it_after_restart(
    repo: Path, tmp_path: Path, gateway_process: tuple[subprocess.Popen[bytes], str]
) -> None:
    process, address = gateway_process
    with AdminClient(address, TOKEN) as admin:
        admin.register("mnist", {"model.onnx": DIGITS_ONNX})  # completes: must come back
    big = tmp_path / "big.onnx"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    artifact = Artifact.from_path("model.onnx", big)
    half_sent = threading.Event()
    release = threading.Event()

    def stalling() -> Iterator[apb.RegisterModelRequest]:
        for i, message in enumerate(registration_messages("doomed", [artifact])):
            yield message
            if i == 4:  # header and four chunks are on their way: stall, half done
                half_sent.set()
                release.wait(30)

    failure: list[BaseException] = []

    def upload() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = apb_grpc.ModelAdminStub(channel)
            try:
                stub.RegisterModel(stalling(), metadata=(("authorization", f"Bearer {TOKEN}"),))
            except grpc.RpcError as exc:
                failure.append(exc)

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    assert half_sent.wait(10)
    staging = repo / ".staging"
    deadline = time.monotonic() + 10
    while not any(p.stat().st_size for p in staging.rglob("model.onnx")):
        assert time.monotonic() < deadline, "the upload never reached the disk"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    release.set()
    thread.join(10)
    assert failure, "the upload should have failed with the gateway gone"
    assert any(staging.rglob("model.onnx"))  # the half-written file is still there

    # A new gateway on the same repository.
    port_file = tmp_path / "port2"
    second = subprocess.Popen(
        _serve_command(repo, port_file),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_ENV,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert second.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        address = f"127.0.0.1:{port_file.read_text()}"
        with AdminClient(address, TOKEN) as admin:
            names = {m.name: m.state for m in admin.list_models()}
            assert names == {"digits": "READY", "mnist": "READY"}
            with pytest.raises(AdminError) as missing:
                admin.describe("doomed")
            assert missing.value.code is grpc.StatusCode.NOT_FOUND
        with Client(address) as client:
            assert client.infer("mnist", {"x": np.zeros((1, 64), np.float32)})["y"].shape == (1, 10)
        assert not staging.exists()
        assert parse_config((repo / "digits" / "config.pbtxt").read_text(), "x").name == "digits"
    finally:
        second.kill()
        second.wait()
