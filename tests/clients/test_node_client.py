"""The Node.js client (clients/node) against a gateway started through the CLI.

It runs the client's own tests (`node --test`) with the gateway's address and admin
token in the environment. Node.js and the client's packages (`npm ci` in clients/node,
which `make install` runs) are requirements of the test suite: without them this test
fails, it does not skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.conftest import DIGITS_ONNX, LiveGateway

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "clients" / "node"
NODE_TEST = "test/client.test.js"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed: install Node.js 18+ (then `make install`)")
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("the Node.js client's packages are missing: run `make install` (npm ci)")
    return found


def test_the_node_client_passes_its_tests_on_a_live_gateway(live_gateway: LiveGateway) -> None:
    environment = {
        **os.environ,
        "INFERGATE_ADDRESS": live_gateway.url,
        "INFERGATE_ADMIN_TOKEN": live_gateway.token,
        "INFERGATE_ONNX": str(DIGITS_ONNX),
        "INFERGATE_DIGITS_CASE": str(live_gateway.digits_case()),
    }
    done = subprocess.run(
        [node(), "--test", NODE_TEST],
        cwd=NODE_CLIENT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    # Every test ran and passed: none skipped, none left out.
    assert "# pass 6" in report and "# fail 0" in report and "# skipped 0" in report, report
