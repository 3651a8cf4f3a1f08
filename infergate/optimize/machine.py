"""What this machine can run fast: the facts every variant's availability rests on.

The probe looks once (`probe_machine`); the decisions (`catalog.availability`) are
pure functions of a `Machine`, so a test can hand in the facts of a GPU machine or
of a CPU without VNNI on any machine.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

from infergate.backends.base import BackendOptions
from infergate.backends.providers import choose_providers, probe_providers
from infergate.optimize import deps

CPUINFO = Path("/proc/cpuinfo")
# x86 instructions that multiply int8 without the 16-bit saturation of VPMADDUBSW.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
X86 = ("x86_64", "amd64", "i386", "i686")


@dataclass(frozen=True)
class Machine:
    """The facts about this machine that decide which variants are worth making."""

    arch: str  # platform.machine(), lower case
    cpu_flags: frozenset[str]
    # Where onnxruntime would run for these options ("cpu", "cuda:0"), and why not
    # on a GPU provider when it is "cpu" (provider -> reason).
    onnxruntime_device: str = "cpu"
    onnxruntime_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    onnxruntime_skipped: dict[str, str] = field(default_factory=dict)
    # OpenVINO CPU plugin OPTIMIZATION_CAPABILITIES; None when it could not be asked.
    openvino_capabilities: tuple[str, ...] | None = None
    openvino_error: str = ""
    # Optional modules importable here (deps.PACKAGES).
    modules: frozenset[str] = frozenset()

    @property
    def is_x86(self) -> bool:
        return self.arch in X86

    @property
    def vnni(self) -> bool:
        return any(flag in self.cpu_flags for flag in VNNI_FLAGS)

    @property
    def reduce_range(self) -> bool:
        """Quantize weights to 7 bits: onnxruntime's advice on x86 CPUs without VNNI,
        where u8 x s8 products summed in pairs can saturate 16 bits."""
        return self.is_x86 and not self.vnni

    def has(self, module: str) -> bool:
        return module in self.modules

    def summary(self) -> dict[str, object]:
        """The facts as JSON-ready values, for gate.json and reports."""
        return {
            "arch": self.arch,
            "vnni": self.vnni,
            "reduce_range": self.reduce_range,
            "onnxruntime_device": self.onnxruntime_device,
            "onnxruntime_skipped": dict(self.onnxruntime_skipped),
            "openvino_capabilities": list(self.openvino_capabilities or ()),
        }


def read_cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first processor's feature flags (x86 `flags`, Arm `Features`)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def probe_machine(options: BackendOptions | None = None) -> Machine:
    """Look at this machine (once per call: a few milliseconds, plus OpenVINO's start)."""
    options = options or BackendOptions()
    choice = choose_providers(
        probe_providers(),
        use_gpu=options.use_gpu,
        device_id=int(options.extra.get("device_id", "0")),
    )
    capabilities: tuple[str, ...] | None = None
    error = ""
    if deps.available("openvino"):
        try:
            import openvino as ov

            capabilities = tuple(
                str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            )
        except Exception as exc:  # a broken plugin: say so instead of failing the probe
            error = f"{type(exc).__name__}: {exc}"
    else:
        error = deps.missing_reason("openvino")
    return Machine(
        arch=platform.machine().lower(),
        cpu_flags=read_cpu_flags(),
        onnxruntime_device=choice.device,
        onnxruntime_providers=choice.providers,
        onnxruntime_skipped=dict(choice.skipped),
        openvino_capabilities=capabilities,
        openvino_error=error,
        modules=frozenset(m for m in deps.PACKAGES if deps.available(m)),
    )
