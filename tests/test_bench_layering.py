"""The bench package's imports run one way: bench.run (the entry) -> the sections ->
the helpers they share. Nothing imports bench.run, and bench modules import each
other in no circle, so a section or a helper can be imported (and run alone) without
dragging in the rest."""

from __future__ import annotations

import ast
from collections.abc import Mapping, Set
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
ENTRY = "bench.run"


def bench_modules() -> dict[str, Path]:
    return {f"bench.{path.stem}": path for path in sorted(BENCH.glob("*.py"))}


def bench_imports(path: Path, known: Set[str]) -> set[str]:
    """The bench modules that `path` imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # A relative import inside bench/ is from the bench package.
            module = "bench" if node.level else ""
            module = ".".join(filter(None, (module, node.module)))
            # `from bench import x` imports module bench.x, as `from bench.x import y` does.
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = bench_modules()
    return {name: bench_imports(path, modules.keys()) - {name} for name, path in modules.items()}


def find_cycle(graph: Mapping[str, Set[str]]) -> list[str] | None:
    """One import circle, as the modules along it (the first again at the end)."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for imported in sorted(graph.get(name, ())):
            cycle = visit(imported, [*path, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def test_the_graph_is_read() -> None:
    # Guards the checks below against passing on an empty graph.
    graph = import_graph()
    assert ENTRY in graph
    assert {"bench.batching", "bench.tracing"} <= graph[ENTRY]


def test_nothing_imports_the_entry() -> None:
    importers = sorted(name for name, imported in import_graph().items() if ENTRY in imported)
    assert not importers, f"{ENTRY} is the command line; move what they need below it"


def test_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "bench modules import each other in a circle: " + " -> ".join(cycle)


def test_a_circle_is_found() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
