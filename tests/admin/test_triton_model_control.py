"""Triton's model control (RepositoryModelLoad / Unload) through tritonclient itself.

tritonclient runs in a process of its own (tests/thirdparty/triton_admin_check.py; it
cannot share a process with infergate.protocol), against a gateway started through
the CLI as an operator would, with the admin token in its environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import TOKEN
from tests.admin.payloads import DIGITS_ONNX, scale_model
from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "thirdparty" / "triton_admin_check.py"
UNAUTHENTICATED = "StatusCode.UNAUTHENTICATED"
INVALID = "StatusCode.INVALID_ARGUMENT"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Path]]:
    tmp = tmp_path_factory.mktemp("triton_admin")
    repo = tmp / "repo"
    repo.mkdir()
    port_file = tmp / "port"
    log = tmp / "gateway.log"
    command = [
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
        "--shutdown-grace-s",
        "1",
    ]
    env = {**os.environ, "INFERGATE_ADMIN_TOKEN": TOKEN}
    with log.open("wb") as out:
        gateway = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert gateway.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "gateway not ready:\n" + log.read_text()
            time.sleep(0.05)
        check = subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                "--url",
                f"127.0.0.1:{port_file.read_text()}",
                "--token",
                TOKEN,
                "--digits",
                str(DIGITS_ONNX),
                "--scale1",
                str(scale_model(tmp / "s1.onnx", 1.0)),
                "--scale2",
                str(scale_model(tmp / "s2.onnx", 2.0)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, f"{check.stderr}\ngateway log:\n{log.read_text()}"
        yield json.loads(check.stdout), repo
    finally:
        gateway.terminate()
        gateway.wait(15)


def ok(results: dict[str, Any], step: str) -> Any:
    assert "error" not in results[step], f"{step}: {results[step]['error']}"
    return results[step]["ok"]


def status(results: dict[str, Any], step: str) -> tuple[str, str]:
    assert "error" in results[step], f"{step} should have failed: {results[step]}"
    error = results[step]["error"]
    return error["status"], error["message"]


def test_load_needs_the_admin_token(results: tuple[dict[str, Any], Path]) -> None:
    r, _ = results
    assert status(r, "load_without_token")[0] == UNAUTHENTICATED
    assert status(r, "load_wrong_token")[0] == UNAUTHENTICATED
    assert status(r, "unload_without_token")[0] == UNAUTHENTICATED


def test_load_with_config_and_files_registers_and_serves(
    results: tuple[dict[str, Any], Path],
) -> None:
    r, repo = results
    assert ok(r, "load_digits") is True
    assert ok(r, "digits_ready") is True
    assert ok(r, "digits_infer_shape") == [2, 10]
    assert (repo / "mnist" / "1" / "model.onnx").read_bytes() == DIGITS_ONNX.read_bytes()
    assert "max_batch_size: 64" in (repo / "mnist" / "config.pbtxt").read_text()
    assert ok(r, "digits_still_serving") == [2, 10]


def test_a_second_version_takes_over_and_versions_are_not_overwritten(
    results: tuple[dict[str, Any], Path],
) -> None:
    r, _ = results
    assert ok(r, "scale_v1_answer") == 1.0
    assert ok(r, "scale_v2_answer") == 2.0
    code, message = status(r, "load_scale_v2_again")
    assert code == "StatusCode.ALREADY_EXISTS" and "version 2" in message
    rows = {(m["name"], m.get("version", ""), m.get("state", "")) for m in ok(r, "index")["models"]}
    assert ("scale", "2", "READY") in rows and ("mnist", "1", "READY") in rows


def test_load_without_files_reloads_from_the_repository(
    results: tuple[dict[str, Any], Path],
) -> None:
    r, repo = results
    assert ok(r, "reload_from_repository") is True
    assert ok(r, "scale_after_reload") == 2.0
    assert ok(r, "reload_with_config") is True
    assert int(ok(r, "scale_config_after_reload")["config"]["max_batch_size"]) == 2
    assert "max_batch_size: 2" in (repo / "scale" / "config.pbtxt").read_text()


def test_unload_stops_serving_and_keeps_the_files(results: tuple[dict[str, Any], Path]) -> None:
    r, repo = results
    assert ok(r, "unload_scale") is True
    assert ok(r, "scale_ready_after_unload") is False
    assert ok(r, "load_scale_back") is True
    assert ok(r, "scale_after_load_back") == 2.0
    assert (repo / "scale" / "1").is_dir() and (repo / "scale" / "2").is_dir()


def test_bad_loads_are_refused_and_leave_nothing(results: tuple[dict[str, Any], Path]) -> None:
    r, repo = results
    assert status(r, "load_corrupt")[0] == INVALID
    assert "config" in status(r, "load_files_without_config")[1]
    assert status(r, "load_files_without_config")[0] == INVALID
    assert status(r, "load_bad_name")[0] == INVALID
    assert status(r, "load_bad_path")[0] == INVALID
    assert status(r, "load_unknown")[0] == "StatusCode.NOT_FOUND"
    assert status(r, "unload_unknown")[0] == "StatusCode.NOT_FOUND"
    assert sorted(p.name for p in repo.iterdir() if not p.name.startswith(".")) == [
        "mnist",
        "scale",
    ]
