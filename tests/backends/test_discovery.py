"""Backends are found through entry points; a missing runtime is absent, not a crash."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint

from infergate.backends.discovery import discover
from tests.conftest import ROOT


def test_installed_onnxruntime_backend_is_found() -> None:
    found = discover()
    assert "onnxruntime" in found.backends
    assert found.backends["onnxruntime"].version()


def test_a_backend_whose_runtime_is_missing_is_left_out_with_a_reason() -> None:
    points = [
        EntryPoint("onnxruntime", "infergate.backends.onnxruntime:OnnxRuntimeBackend", "g"),
        EntryPoint("ghost", "no_such_runtime_package.backend:Backend", "g"),
        EntryPoint("notabackend", "collections:OrderedDict", "g"),
    ]
    found = discover(points=points)
    assert list(found.backends) == ["onnxruntime"]
    reasons = {u.name: u.reason for u in found.unavailable}
    assert "ModuleNotFoundError" in reasons["ghost"]
    assert "not an infergate Backend" in reasons["notabackend"]


def test_asking_for_an_unknown_backend_says_so() -> None:
    found = discover(only=["onnxruntime", "tpu9000"])
    assert list(found.backends) == ["onnxruntime"]
    assert [(u.name, u.reason) for u in found.unavailable] == [
        ("tpu9000", "no such backend is installed")
    ]


def test_openvino_and_tflite_are_found_with_their_artifacts() -> None:
    found = discover(only=["openvino", "tflite"])
    assert list(found.backends) == ["openvino", "tflite"]
    assert found.backends["openvino"].artifact_names == ("model.xml", "model.onnx")
    assert found.backends["tflite"].artifact_names == ("model.tflite",)
    assert all(b.devices() == ["cpu"] for b in found.backends.values())


# Run in a process of its own: the runtime packages are made unimportable there,
# as on a machine where they were never installed, before anything imports them.
_WITHOUT_RUNTIMES = """
import logging, sys
for package in ("openvino", "ai_edge_litert"):
    sys.modules[package] = None  # import raises ModuleNotFoundError
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(message)s")
from infergate.backends.discovery import discover
found = discover()
print("FOUND", *found.backends)
for u in found.unavailable:
    print("MISSING", u.name, u.reason)
"""


def test_a_missing_openvino_or_litert_package_leaves_just_that_backend_out() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT_RUNTIMES],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    lines = run.stdout.splitlines()
    assert "FOUND onnxruntime" in lines
    for name, package in (("openvino", "openvino"), ("tflite", "ai_edge_litert")):
        assert any(
            line.startswith(f"LOG backend {name} is not available: ModuleNotFoundError")
            and package in line
            for line in lines
        ), run.stdout
        assert any(line.startswith(f"MISSING {name} ModuleNotFoundError") for line in lines)


def test_the_cli_lists_every_backend_with_version_devices_and_artifacts() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "infergate.cli", "backends", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    rows = {row["name"]: row for row in json.loads(run.stdout)}
    assert {"onnxruntime", "openvino", "tflite"} <= set(rows)
    assert rows["tflite"]["available"] and rows["tflite"]["artifacts"] == ["model.tflite"]
    assert rows["openvino"]["devices"] == ["cpu"] and rows["openvino"]["version"]
