"""The optional libraries variants need, imported only when used.

Serving needs none of them; building a variant does (the `optimize` extra:
`pip install -e '.[optimize]'`, and `convert` for tensorflow). A missing one is a
PreconditionFailed that says which package to install, never an ImportError from
deep inside a build.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata
from typing import Any

from infergate.schema.errors import PreconditionFailed

# Module -> the distribution that provides it, and the extra that installs it.
PACKAGES: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnxruntime-gpu", "the base install"),
    "onnx": ("onnx", "the `optimize` extra"),
    "sympy": ("sympy", "the `optimize` extra"),
    "onnxconverter_common": ("onnxconverter-common", "the `optimize` extra"),
    "openvino": ("openvino", "the base install"),
    "nncf": ("nncf", "the `optimize` extra"),
    "tensorflow": ("tensorflow-cpu", "the `convert` extra"),
    "ai_edge_litert": ("ai-edge-litert", "the base install"),
    "matplotlib": ("matplotlib", "the `optimize` extra"),
}


def available(module: str) -> bool:
    """Whether `module` could be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_reason(module: str) -> str:
    top = module.split(".")[0]
    package, extra = PACKAGES.get(top, (top, "pip"))
    return f"the Python package {package} is not installed (it comes with {extra})"


def need(module: str, purpose: str) -> Any:
    """Import `module` for `purpose`; PreconditionFailed saying what to install if absent.

    Returned as Any: these libraries ship no type information.
    """
    if not available(module):
        raise PreconditionFailed(f"{purpose} needs {module}: {missing_reason(module)}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PreconditionFailed(f"{purpose} needs {module}, which fails to import: {exc}") from exc


def version(module: str) -> str | None:
    """The installed version of `module`'s distribution, or None."""
    package = PACKAGES.get(module, (module, ""))[0]
    for name in (package, module):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
