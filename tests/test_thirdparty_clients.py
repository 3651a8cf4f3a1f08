"""The gateway driven by Triton's own clients: tritonclient (Python) and perf_analyzer.

tritonclient cannot be imported in this process (its generated protobuf code and
infergate's register the same `inference.*` symbols), so it runs in a script of its
own, tests/thirdparty/triton_client_check.py, which prints JSON for these tests to
check. The gateway is started through the CLI, as a user would.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.cli_gateway import cli_gateway as started_gateway

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "models" / "repository"
CLIENT_SCRIPT = ROOT / "tests" / "thirdparty" / "triton_client_check.py"
BIN = Path(sys.executable).parent
MODELS = ("digits", "cnn")
READY_TIMEOUT_S = 60.0
GRACE_S = 2.0


@dataclass(frozen=True)
class Gateway:
    url: str
    repository: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def cli_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("thirdparty")
    repository = tmp / "repository"
    for name in MODELS:
        shutil.copytree(REPOSITORY / name, repository / name)
    with started_gateway(tmp, repository, grace_s=GRACE_S) as gateway:
        yield Gateway(url=gateway.url, repository=repository, log=gateway.log)


# ---- tritonclient --------------------------------------------------------------


def _ok(results: dict[str, Any], step: str) -> Any:
    entry = results[step]
    assert "error" not in entry, f"{step} failed: {entry['error']}"
    return entry["ok"]


@pytest.fixture(scope="module")
def triton_client_results(
    cli_gateway: Gateway, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], np.ndarray]:
    x = np.random.default_rng(7).uniform(0.0, 16.0, size=(4, 64)).astype(np.float32)
    input_path = tmp_path_factory.mktemp("client") / "x.npy"
    np.save(input_path, x)
    proc = subprocess.run(
        [sys.executable, str(CLIENT_SCRIPT), "--url", cli_gateway.url, "--input", str(input_path)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, (
        f"client script exited with {proc.returncode}:\n{proc.stderr}\n"
        f"gateway log:\n{cli_gateway.log_text()}"
    )
    return json.loads(proc.stdout), x


def _expected(gw: Gateway, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(gw.repository / "digits" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    (y,) = session.run(["y"], {"x": x})
    return np.asarray(y)


def test_triton_client_health_and_metadata(
    triton_client_results: tuple[dict[str, Any], np.ndarray],
) -> None:
    results, _ = triton_client_results
    assert _ok(results, "is_server_live") is True
    assert _ok(results, "is_server_ready") is True
    assert _ok(results, "is_model_ready") is True

    server = _ok(results, "server_metadata")
    assert server["name"] == "infergate"
    assert server["version"]

    meta = _ok(results, "model_metadata")
    assert meta["name"] == "digits"
    assert "1" in meta["versions"]
    (inp,) = meta["inputs"]
    (out,) = meta["outputs"]
    # int64 fields come back from protobuf's JSON as strings.
    assert (inp["name"], inp["datatype"], [int(d) for d in inp["shape"]]) == ("x", "FP32", [-1, 64])
    assert (out["name"], out["datatype"], [int(d) for d in out["shape"]]) == ("y", "FP32", [-1, 10])

    config = _ok(results, "model_config")["config"]
    assert config["name"] == "digits"
    assert int(config["max_batch_size"]) == 64
    assert [i["name"] for i in config["input"]] == ["x"]
    assert [int(d) for d in config["input"][0]["dims"]] == [64]

    index = _ok(results, "repository_index")
    rows = {row["name"]: row for row in index["models"]}
    assert set(rows) == set(MODELS)
    assert rows["digits"]["state"] == "READY"


def test_triton_client_infer_matches_onnxruntime(
    cli_gateway: Gateway, triton_client_results: tuple[dict[str, Any], np.ndarray]
) -> None:
    results, x = triton_client_results
    infer = _ok(results, "infer")
    assert infer["id"] == "infer-1"
    assert infer["model_name"] == "digits"
    assert infer["y_dtype"] == "float32"
    assert infer["y_shape"] == [4, 10]
    np.testing.assert_allclose(
        np.asarray(infer["y"], dtype=np.float32), _expected(cli_gateway, x), rtol=0, atol=1e-5
    )


def test_triton_client_stream(
    cli_gateway: Gateway, triton_client_results: tuple[dict[str, Any], np.ndarray]
) -> None:
    results, x = triton_client_results
    stream = _ok(results, "stream")
    assert stream["errors"] == []
    assert stream["completed"] is True
    expected = _expected(cli_gateway, x)
    assert set(stream["answers"]) == {"stream-0", "stream-1", "stream-2"}
    for i in range(3):
        got = np.asarray(stream["answers"][f"stream-{i}"], dtype=np.float32)
        np.testing.assert_allclose(got, expected[i : i + 1], rtol=0, atol=1e-5)


def test_triton_client_bad_shape_is_invalid_argument(
    triton_client_results: tuple[dict[str, Any], np.ndarray],
) -> None:
    results, _ = triton_client_results
    bad = _ok(results, "bad_shape")
    assert bad["raised"] is True
    assert bad["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "'x'" in bad["message"]


def test_triton_client_statistics(
    triton_client_results: tuple[dict[str, Any], np.ndarray],
) -> None:
    results, x = triton_client_results
    stats = _ok(results, "statistics")
    (model,) = stats["model_stats"]
    assert model["name"] == "digits"
    before = _ok(results, "inference_count_before")
    after = _ok(results, "inference_count_after")
    # One request of len(x) rows, then three of one row each on the stream.
    assert after - before == len(x) + 3
    assert int(model["inference_stats"]["success"]["count"]) >= 4


# ---- perf_analyzer ---------------------------------------------------------------


def _perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer needs libcudart.so.12 even on CPU: nvidia-cuda-runtime-cu12 has it."""
    import nvidia.cuda_runtime  # type: ignore[import-untyped]

    lib = os.path.join(next(iter(nvidia.cuda_runtime.__path__)), "lib")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (lib, env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def _perf_analyzer(
    gw: Gateway, model: str, csv_path: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    binary = BIN / "perf_analyzer"
    assert binary.exists(), f"perf_analyzer not found next to {sys.executable}"
    command = [
        str(binary),
        "-i",
        "grpc",
        "-u",
        gw.url,
        "-m",
        model,
        "--concurrency-range",
        "2",
        "--measurement-interval",
        "1000",
        # These tests check that perf_analyzer works against the gateway, not how steady
        # the numbers are: on a small shared machine the latency of three windows can
        # differ by more than 100% (perf_analyzer then fails with "Failed to obtain
        # stable measurement"); 1000% accepts any three windows.
        "--stability-percentage",
        "1000",
        "--max-trials",
        "3",
        "-f",
        str(csv_path),
        *extra,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=_perf_analyzer_env()
    )


def _report(proc: subprocess.CompletedProcess[str], gw: Gateway) -> str:
    return (
        f"perf_analyzer exited with {proc.returncode}\nstdout:\n{proc.stdout}\n"
        f"stderr:\n{proc.stderr}\ngateway log:\n{gw.log_text()}"
    )


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error" in line.lower()]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_perf_analyzer_digits(cli_gateway: Gateway, tmp_path: Path) -> None:
    csv_path = tmp_path / "digits.csv"
    proc = _perf_analyzer(cli_gateway, "digits", csv_path)
    assert proc.returncode == 0, _report(proc, cli_gateway)
    assert _error_lines(proc.stdout + proc.stderr) == [], _report(proc, cli_gateway)
    (row,) = _csv_rows(csv_path)
    assert int(row["Concurrency"]) == 2
    assert float(row["Inferences/Second"]) > 0
    assert float(row["p99 latency"]) >= float(row["p50 latency"]) > 0


def test_perf_analyzer_streaming_cnn(cli_gateway: Gateway, tmp_path: Path) -> None:
    csv_path = tmp_path / "cnn.csv"
    proc = _perf_analyzer(cli_gateway, "cnn", csv_path, "--streaming")
    assert proc.returncode == 0, _report(proc, cli_gateway)
    assert _error_lines(proc.stdout + proc.stderr) == [], _report(proc, cli_gateway)
    (row,) = _csv_rows(csv_path)
    assert float(row["Inferences/Second"]) > 0
