"""proto/ is the whole contract: stubs generated from it alone, with grpcio-tools, into a
folder of their own, call inference, streaming, metadata and the admin service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from infergate.clients import Client
from tests.clients.conftest import LiveGateway

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
CHECK = Path(__file__).with_name("generated_stub_check.py")


def generate(out: Path) -> list[str]:
    """Python stubs from proto/*.proto, by grpcio-tools' protoc (which adds the
    well-known types, field_mask.proto among them, to the include path)."""
    out.mkdir()
    protos = sorted(str(p) for p in PROTO.glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return sorted(p.name for p in out.iterdir())


def test_stubs_generated_from_proto_alone_call_every_service(
    live_gateway: LiveGateway, tmp_path: Path
) -> None:
    stubs = tmp_path / "stubs"
    assert {"inference_pb2.py", "inference_pb2_grpc.py", "admin_pb2_grpc.py"} <= set(
        generate(stubs)
    )
    done = subprocess.run(
        [
            sys.executable,
            str(CHECK),
            "--stubs",
            str(stubs),
            "--url",
            live_gateway.url,
            "--token",
            live_gateway.token,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the repository: nothing of ours on the path
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    x = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 64)
    with Client(live_gateway.url) as client:
        expected = client.infer("digits", {"x": x})["y"]
    assert report["infer"]["id"] == "unary"
    np.testing.assert_allclose(report["infer"]["y"], expected, atol=1e-6)
    assert report["stream"] == [["s1", ""], ["s2", ""]]
    assert report["metadata"] == [["x", "FP32", [-1, 64]]]
    assert "digits" in report["models"]
    assert report["described"] == ["digits", "READY", 64]
    assert report["without_token"] == "UNAUTHENTICATED"
    assert report["infergate_imported"] == []
