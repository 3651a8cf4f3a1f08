"""The machine a benchmark ran on: CPUs, GPUs, software versions and git commit, so
that a report says what its figures were measured with."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from bench.perf_analyzer import PerfAnalyzerError, perf_analyzer_env, perf_analyzer_path


def machine_info(root: Path) -> dict[str, Any]:
    """The fingerprint, for the report's JSON; `root` is the checkout for the commit."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": platform.node(),
        "nproc": len(affinity) if affinity is not None else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "gpus": _gpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": _package_version("onnxruntime-gpu", "onnxruntime"),
        "infergate": _package_version("infergate"),
        "grpcio": _package_version("grpcio"),
        "perf_analyzer": _perf_analyzer_version(),
        "git_commit": _git_commit(root),
    }


def machine_summary(machine: dict[str, Any]) -> str:
    """machine_info's fingerprint as the markdown list under a report's title."""
    gpus = ", ".join(machine.get("gpus") or []) or "none"
    return (
        f"- machine: {machine.get('nproc')} CPUs usable ({machine.get('cpu_count')} online), "
        f"{machine.get('cpu_model')}; GPUs: {gpus}\n"
        f"- software: onnxruntime {machine.get('onnxruntime')}, grpcio {machine.get('grpcio')}, "
        f"perf_analyzer {machine.get('perf_analyzer')}, Python {machine.get('python')}, "
        f"infergate {machine.get('infergate')} (git {machine.get('git_commit')})\n"
        f"- platform: {machine.get('platform')}"
    )


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gpus() -> list[str]:
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def _perf_analyzer_version() -> str | None:
    try:
        proc = subprocess.run(
            [str(perf_analyzer_path()), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            env=perf_analyzer_env(),
        )
    except (OSError, subprocess.TimeoutExpired, PerfAnalyzerError):
        return None
    match = re.search(r"Version\s+(\S+)", proc.stdout + proc.stderr)
    return match.group(1) if match else None


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)


def _git_commit(root: Path) -> str | None:
    """The short commit, with "-dirty" if tracked files differ from it."""
    try:
        head = _git(root, "rev-parse", "--short", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
