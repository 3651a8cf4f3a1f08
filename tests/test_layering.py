"""The core and the backends know nothing about gRPC (DESIGN.md, "The request path")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "infergate"
# The wire messages and services; model_config_pb2 is the config *file* schema and
# may be used by the core.
FORBIDDEN = ("grpc", "grpc_health", "grpc_reflection", "infergate.protocol.inference_pb2")


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_core_and_backends_do_not_import_grpc_or_wire_messages() -> None:
    offenders = []
    for folder in (PACKAGE / "gateway" / "core", PACKAGE / "backends"):
        for path in folder.rglob("*.py"):
            bad = {
                name
                for name in imports(path)
                if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
            }
            if bad:
                offenders.append(f"{path.relative_to(PACKAGE)}: {sorted(bad)}")
    assert not offenders
