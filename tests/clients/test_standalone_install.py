"""The client installs on its own: `pip install infergate` (no extras) into an empty
virtual environment brings grpcio, protobuf and numpy, none of the gateway's runtimes,
and the client works from there against a live gateway.

Marked `registry`: pip fetches what its cache lacks from the package registry (it
builds the package with setuptools in an isolated environment, too). About 15-40 s.

What is installed is the repository root's package, copied first (pyproject.toml,
README.md, infergate/) so that setuptools' build folders land in the test's
temporary folder and not in the working tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.clients.conftest import LiveGateway

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 300

# Run by the new environment's python, away from the repository (nothing of the
# source tree on its path): every face of the client, and the errors.
CLIENT_SCRIPT = """
import asyncio, json, sys
import numpy as np
from infergate.clients import AdminClient, AsyncClient, Client, ModelNotFound

url, token = sys.argv[1], sys.argv[2]
report = {}
with Client(url) as client:
    report["y"] = client.infer("digits", {"x": np.load(sys.argv[3])})["y"].tolist()
    try:
        client.infer("no_such_model", {"x": np.zeros((1, 64), np.float32)})
    except ModelNotFound as exc:
        report["missing"] = exc.code.name

async def ready():
    async with AsyncClient(url) as client:
        return await client.is_model_ready("digits")

report["ready"] = asyncio.run(ready())
with AdminClient(url, token) as admin:
    report["models"] = sorted(m.name for m in admin.list_models())
import infergate.clients
report["from"] = infergate.clients.__file__
print(json.dumps(report))
"""


def run(command: list[str], cwd: Path, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)


@pytest.mark.registry
def test_the_client_alone_installs_without_the_runtimes_and_works(
    live_gateway: LiveGateway, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    source = tmp_path / "source"
    caches = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "infergate", source / "infergate", ignore=caches)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    installed = run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        tmp_path,
        INSTALL_TIMEOUT_S,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    for runtime in ("onnxruntime", "openvino", "tensorflow", "ai_edge_litert", "grpc_health"):
        missing = run([python, "-c", f"import {runtime}"], tmp_path)
        assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr, runtime

    x = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 64)
    np.save(tmp_path / "x.npy", x)
    used = run(
        [python, "-c", CLIENT_SCRIPT, live_gateway.url, live_gateway.token, "x.npy"], tmp_path
    )
    assert used.returncode == 0, used.stderr
    report = json.loads(used.stdout)
    assert np.asarray(report["y"]).shape == (2, 10)
    assert report["missing"] == "NOT_FOUND" and report["ready"] is True
    assert "digits" in report["models"]
    assert Path(report["from"]).is_relative_to(venv)  # the installed copy, not the tree

    # The CLI's client commands work there too; serving says what to install.
    cli = str(venv / "bin" / "infergate")
    inferred = run(
        [cli, "infer", "digits", "--url", live_gateway.url, "--input", "x=x.npy"], tmp_path
    )
    assert inferred.returncode == 0 and "y: float32 [2, 10]" in inferred.stdout, inferred.stderr
    served = run([cli, "serve", "--port", "0"], tmp_path)
    assert served.returncode != 0
    assert "pip install 'infergate[server]'" in served.stderr, served.stderr
