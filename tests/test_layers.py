"""actsteer's imports point down its declared layers (:mod:`actsteer.layers`), and never
in a circle: every module's imports, top-level, in functions, and ``import_module``
strings, parsed with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import actsteer
from actsteer.layers import LAYERS, layer_of

PACKAGE = Path(actsteer.__file__).parent


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` (with text ``source``) imports."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(target: str) -> None:  # the longest known module target is or lies in
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            stem = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{stem}.{alias.name}"
                resolve(full if full in known else stem)
        elif isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                node.func, "id", "")
            if (called == "import_module" and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                resolve(node.args[0].value)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    paths = {module_name(path, root): path for path in root.rglob("*.py")}
    known = set(paths)
    return {name: imports_of(path.read_text(encoding="utf-8"), name,
                             path.name == "__init__.py", known)
            for name, path in paths.items()}


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a higher layer, as ``a (layer) -> b (layer)``."""
    names = [name for name, _ in LAYERS]
    return sorted(f"{a} ({names[layer_of(a)]}) -> {b} ({names[layer_of(b)]})"
                  for a, targets in graph.items() for b in targets
                  if layer_of(b) > layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


GRAPH = import_graph(PACKAGE)


def test_every_module_has_a_layer() -> None:
    missing = []
    for name in GRAPH:
        try:
            layer_of(name)
        except KeyError:
            missing.append(name)
    assert missing == []


def test_imports_point_down_the_declared_layers() -> None:
    assert upward(GRAPH) == []


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


def test_the_parser_sees_lazy_imports_strings_and_relative_imports() -> None:
    known = {"actsteer", "actsteer.a", "actsteer.b", "actsteer.c", "actsteer.d", "actsteer.p",
             "actsteer.p.q"}
    source = ("import importlib\n"
              "def later():\n"
              "    from actsteer.b import thing\n"
              "    importlib.import_module('actsteer.c')\n"
              "from . import d\n")
    assert imports_of(source, "actsteer.a", False, known) == {
        "actsteer.b", "actsteer.c", "actsteer.d"}
    assert imports_of("from .q import x\n", "actsteer.p", True, known) == {"actsteer.p.q"}


def test_an_upward_import_and_a_cycle_are_caught() -> None:
    # the seam reaching up to its Ray implementation, lazily, as it once did
    graph = {**GRAPH, "actsteer.executor": GRAPH["actsteer.executor"] | {
        "actsteer.ray_executor"}}
    assert upward(graph) == ["actsteer.executor (executor seam) -> actsteer.ray_executor "
                             "(methods and executors)"]
    assert cycles(graph) == [["actsteer.executor", "actsteer.ray_executor"]]
    # a cycle within one layer is not an upward import, and is still refused
    sideways = {**GRAPH, "actsteer.stats": GRAPH["actsteer.stats"] | {"actsteer.batching"},
                "actsteer.batching": GRAPH["actsteer.batching"] | {"actsteer.stats"}}
    assert upward(sideways) == [] and cycles(sideways) == [["actsteer.batching",
                                                            "actsteer.stats"]]


def test_layer_of_names_the_fix_for_an_undeclared_module() -> None:
    assert layer_of("actsteer.models.info") == layer_of("actsteer.models") == 1
    assert layer_of("actsteer") == [n for n, _ in LAYERS].index("public API")
    with pytest.raises(KeyError, match=r"'actsteer\.nowhere'.*add it"):
        layer_of("actsteer.nowhere")
