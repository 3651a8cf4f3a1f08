"""Imports run one way (docs/architecture.md, "Layers").

    cli -> server -> servicers -> gateway (conversion, status, auth) -> core
        -> optimize -> backends -> schema

Settings and telemetry are leaves any layer may use; the generated protocol is
the wire contract, used from the gateway layer up (the core may read the
ModelConfig file schema). Clients stand apart: they use the schema and the
protocol only, so they install and run without the server's runtimes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "infergate"

# The wire messages and services; model_config_pb2 is the config *file* schema and
# may be used by the core.
GRPC = ("grpc", "grpc_health", "grpc_reflection", "infergate.protocol.inference_pb2")

# Layer of each part of the package, lowest first: a module may import its own
# layer and those below it, never one above.
LAYERS: tuple[tuple[str, int], ...] = (
    ("infergate.schema", 0),
    ("infergate.protocol", 0),
    ("infergate.backends", 1),
    ("infergate.optimize", 2),
    ("infergate.gateway.core", 3),
    ("infergate.gateway.servicers", 5),
    ("infergate.gateway.server", 6),
    ("infergate.gateway", 4),  # conversion, status map, auth, tls
    ("infergate.cli", 7),
    ("infergate.cli_models", 7),
)
# Usable from any layer; they import only the schema, themselves and the package
# root (its version string).
LEAVES = ("infergate.settings", "infergate.telemetry")


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer(name: str) -> int | None:
    for prefix, rank in LAYERS:
        if _under(name, prefix):
            return rank
    return None


def ours(path: Path) -> set[str]:
    """What the module imports from infergate, as module (or attribute) paths."""
    return {name for name in imports(path) if _under(name, "infergate")}


def modules(*parts: str) -> list[Path]:
    return sorted((PACKAGE.joinpath(*parts)).rglob("*.py"))


def upward_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    """Imports of `path` (a module of `package`) that break the layer rule."""
    own = module_name(path, package)
    bad = []
    for name in ours(path):
        if name == "infergate" or name == "infergate.__version__":
            continue
        if any(_under(own, leaf) for leaf in LEAVES):
            if not (_under(name, "infergate.schema") or any(_under(name, p) for p in LEAVES)):
                bad.append(name)
            continue
        if any(_under(name, leaf) for leaf in LEAVES):
            continue
        if _under(own, "infergate.clients"):
            allowed = ("infergate.clients", "infergate.schema", "infergate.protocol")
            if not any(_under(name, p) for p in allowed):
                bad.append(name)
            continue
        mine, theirs = layer(own), layer(name)
        if _under(name, "infergate.clients"):
            theirs = layer("infergate.cli") if mine is not None else None  # only the CLI
        if mine is None or theirs is None or theirs > mine:
            bad.append(name)
    return sorted(bad)


def test_every_module_has_a_layer() -> None:
    unplaced = [
        module_name(p)
        for p in modules()
        if module_name(p) != "infergate"
        and layer(module_name(p)) is None
        and not any(_under(module_name(p), q) for q in (*LEAVES, "infergate.clients"))
    ]
    assert not unplaced, f"give these a layer in tests/test_layering.py: {unplaced}"


def test_nothing_imports_upward() -> None:
    offenders = {module_name(p): bad for p in modules() if (bad := upward_imports(p))}
    assert not offenders


def test_schema_imports_nothing_of_ours() -> None:
    offenders = {
        module_name(p): bad
        for p in modules("schema")
        if (bad := sorted(n for n in ours(p) if not _under(n, "infergate.schema")))
    }
    assert not offenders


def test_backends_import_only_the_schema_and_themselves() -> None:
    allowed = ("infergate.schema", "infergate.backends")
    offenders = {
        module_name(p): bad
        for p in modules("backends")
        if (bad := sorted(n for n in ours(p) if not any(_under(n, a) for a in allowed)))
    }
    assert not offenders


def test_clients_never_import_the_gateway() -> None:
    offenders = {
        module_name(p): bad
        for p in modules("clients")
        if (bad := sorted(n for n in ours(p) if _under(n, "infergate.gateway")))
    }
    assert not offenders


def test_core_and_backends_do_not_import_grpc_or_wire_messages() -> None:
    offenders = []
    for path in [*modules("gateway", "core"), *modules("backends"), *modules("schema")]:
        bad = {name for name in imports(path) if any(_under(name, f) for f in GRPC)}
        if bad:
            offenders.append(f"{path.relative_to(PACKAGE)}: {sorted(bad)}")
    assert not offenders


@pytest.mark.parametrize(
    ("importer", "statement", "breaks"),
    [
        ("backends/fresh.py", "from infergate.gateway.core.registry import ModelRegistry", True),
        ("schema/fresh.py", "from infergate.backends.base import Backend", True),
        ("gateway/core/fresh.py", "from infergate.gateway.convert import decode_request", True),
        ("gateway/core/fresh.py", "from infergate.backends.base import Backend", False),
        ("telemetry/fresh.py", "from infergate.gateway.core.stats import ModelStats", True),
        ("clients/fresh.py", "from infergate.gateway.core.errors import InvalidInput", True),
        ("clients/fresh.py", "from infergate.schema.errors import InvalidInput", False),
        ("gateway/servicers/fresh.py", "from infergate.gateway.server import GatewayServer", True),
    ],
)
def test_the_rule_catches_a_violation(
    tmp_path: Path, importer: str, statement: str, breaks: bool
) -> None:
    """The checker itself: a planted upward import is found, a legal one is not."""
    fake = tmp_path / "infergate" / importer
    fake.parent.mkdir(parents=True)
    fake.write_text(statement + "\n")
    assert bool(upward_imports(fake, tmp_path / "infergate")) is breaks
