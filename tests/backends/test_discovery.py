"""Backends are found through entry points; a missing runtime is absent, not a crash."""

from __future__ import annotations

from importlib.metadata import EntryPoint

from infergate.backends.discovery import discover


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
