"""Execution provider choice, fed what a GPU machine and a CPU machine report."""

from __future__ import annotations

import numpy as np

from infergate.backends.base import BackendOptions
from infergate.backends.onnxruntime import OnnxRuntimeBackend
from infergate.backends.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderProbe,
    choose_providers,
    probe_providers,
)

ALL = (TENSORRT, CUDA, CPU)


def gpu_machine(**overrides: object) -> ProviderProbe:
    facts: dict[str, object] = dict(
        available=ALL, cuda_devices=2, loadable=frozenset({TENSORRT, CUDA}), why_not={}
    )
    facts.update(overrides)
    return ProviderProbe(**facts)  # type: ignore[arg-type]


def test_gpu_machine_gets_tensorrt_then_cuda_then_cpu() -> None:
    choice = choose_providers(gpu_machine())
    assert choice.providers == (TENSORRT, CUDA, CPU)
    assert choice.device == "cuda:0" and not choice.skipped


def test_tensorrt_missing_libraries_fall_back_to_cuda() -> None:
    probe = gpu_machine(
        loadable=frozenset({CUDA}), why_not={TENSORRT: "libnvinfer.so.10: not found"}
    )
    choice = choose_providers(probe, device_id=1)
    assert choice.providers == (CUDA, CPU) and choice.device == "cuda:1"
    assert "libnvinfer" in choice.skipped[TENSORRT]


def test_gpu_listed_but_no_device_means_cpu_only() -> None:
    choice = choose_providers(gpu_machine(cuda_devices=0))
    assert choice.providers == (CPU,) and choice.device == "cpu"
    assert "no CUDA device" in choice.skipped[CUDA]


def test_device_id_beyond_the_devices_found_means_cpu() -> None:
    assert choose_providers(gpu_machine(cuda_devices=1), device_id=1).providers == (CPU,)


def test_gpu_use_turned_off() -> None:
    choice = choose_providers(gpu_machine(), use_gpu=False)
    assert choice.providers == (CPU,) and "turned off" in choice.skipped[TENSORRT]


def test_cpu_only_build_of_onnxruntime() -> None:
    probe = ProviderProbe(available=(CPU,), cuda_devices=0, loadable=frozenset(), why_not={})
    assert choose_providers(probe).providers == (CPU,)


def test_this_machine_without_a_gpu_runs_on_cpu_quietly(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from tests import onnx_models

    probe = probe_providers()
    assert probe.cuda_devices == 0  # CI and dev machines have no GPU
    backend = OnnxRuntimeBackend()
    assert backend.devices() == ["cpu"]
    model = backend.load(onnx_models.add_model(tmp_path / "m.onnx"), BackendOptions())
    assert model.device == "cpu"
    assert model.providers == [CPU]  # type: ignore[attr-defined]
    out = model.infer({"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)})
    np.testing.assert_array_equal(out["sum"], np.full((1, 4), 2, np.float32))
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
