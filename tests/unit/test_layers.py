"""The package's layers: no import cycles, and no module imports a layer above its own.

Every ``import`` and ``from ... import`` in the package counts, including those inside
functions (the kit imports heavy libraries lazily, and a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "shopee_match"

#: each part of the package and the layer it sits in: a module may import its own layer and
#: those below it; match and embed share a layer but never import each other
LAYERS = {"files": 0, "progress": 0, "machine": 0,
          "data": 1,
          "match": 2, "embed": 2,
          "train": 3,
          "apply": 4, "distributed": 4,
          "cli": 5, "serve": 5, "report": 5, "notebook": 5, "plots": 5, "widgets": 5}
#: parts of one layer that must not import each other (either way)
APART = {frozenset({"match", "embed"})}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) - {name} for name, path in paths.items()}


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_part_of_the_package_has_a_layer():
    parts = {part(m) for m in import_graph()} - {""}
    assert parts == set(LAYERS), "give a new module or sub-package its layer in LAYERS"


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_no_module_imports_a_layer_above_its_own():
    wrong = []
    for module, imported in import_graph().items():
        for other in imported:
            a, b = part(module), part(other)
            if not a or not b or a == b:
                continue
            if LAYERS[b] > LAYERS[a] or frozenset({a, b}) in APART:
                wrong.append(f"{module} imports {other}")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"b2"}, "b2": {"b"}}, ["b", "b2", "b"]),
])
def test_the_cycle_finder_finds_cycles(graph, cycle):
    assert find_cycle(graph) == cycle


def test_lazy_imports_count(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from shopee_match.apply.service import MatchService\n")
    assert imports_of(source, {"shopee_match.apply.service"}) == {"shopee_match.apply.service"}
