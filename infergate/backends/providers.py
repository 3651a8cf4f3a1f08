"""Which ONNX Runtime execution providers to ask for.

onnxruntime-gpu lists the TensorRT and CUDA providers as "available" on any
machine, GPU or not; asking for one whose libraries are missing makes onnxruntime
log an error and fall back. So we check for ourselves what would really load (the
provider's shared library and its dependencies, and a CUDA device) and ask only for
those. The decision itself is a pure function of what the probe saw, so it can be
tested with the facts of a GPU machine on a machine without one.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class ProviderProbe:
    """What this machine offers onnxruntime."""

    available: tuple[str, ...]  # onnxruntime.get_available_providers()
    cuda_devices: int  # CUDA devices the driver reports (0 without a GPU)
    loadable: frozenset[str]  # providers whose libraries load here
    why_not: dict[str, str]  # provider -> why it cannot be used, for the log


@dataclass(frozen=True)
class ProviderChoice:
    providers: tuple[str, ...]  # to pass to InferenceSession, best first
    device: str  # "cuda:0" or "cpu"
    skipped: dict[str, str]  # provider -> reason it was not asked for


def choose_providers(
    probe: ProviderProbe, use_gpu: bool = True, device_id: int = 0
) -> ProviderChoice:
    """GPU providers only where they load and a device exists; CPU always last."""
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for provider in (TENSORRT, CUDA):
        if provider not in probe.available:
            continue
        if not use_gpu:
            skipped[provider] = "GPU use is turned off"
        elif probe.cuda_devices <= device_id:
            skipped[provider] = f"no CUDA device {device_id} (found {probe.cuda_devices})"
        elif provider not in probe.loadable:
            skipped[provider] = probe.why_not.get(provider, "its libraries do not load")
        else:
            chosen.append(provider)
    chosen.append(CPU)
    device = f"cuda:{device_id}" if chosen[0] != CPU else "cpu"
    return ProviderChoice(tuple(chosen), device, skipped)


def probe_providers() -> ProviderProbe:
    """Look at this machine: which providers onnxruntime offers and which would load."""
    import onnxruntime as ort

    available = tuple(ort.get_available_providers())
    capi = Path(ort.__file__).parent / "capi"
    loadable: set[str] = set()
    why_not: dict[str, str] = {}
    devices = _cuda_device_count() if (TENSORRT in available or CUDA in available) else 0
    gpu_libs = (
        (TENSORRT, "libonnxruntime_providers_tensorrt.so"),
        (CUDA, "libonnxruntime_providers_cuda.so"),
    )
    for provider, lib in gpu_libs:
        if provider not in available:
            continue
        try:
            # The provider libraries resolve symbols from the shared bridge, which
            # onnxruntime itself loads globally first; do the same. Loading is what
            # onnxruntime would do anyway, so keeping the handle costs nothing.
            ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), ctypes.RTLD_GLOBAL)
            ctypes.CDLL(str(capi / lib))
            loadable.add(provider)
        except OSError as exc:
            why_not[provider] = str(exc).split(":")[-1].strip() or str(exc)
    return ProviderProbe(available, devices, frozenset(loadable), why_not)


def _cuda_device_count() -> int:
    """CUDA devices via the runtime library, 0 when there is none or no driver."""
    for name in ("libcudart.so.12", "libcudart.so.13", "libcudart.so"):
        try:
            cudart = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cudart.cudaGetDeviceCount(ctypes.byref(count)) == 0:
            return int(count.value)
        return 0
    return 0
