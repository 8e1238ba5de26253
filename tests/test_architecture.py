"""The package map stays a map: no import cycles, few function-level imports, small modules, and no
package reaching into another package's private (``_name``) modules.

The graph is static (``ast``): every ``import`` of an ``automtd`` module, at module level or inside a
function, with ``if TYPE_CHECKING:`` blocks left out.  A package's ``__init__`` is its own node, so
importing ``automtd.plan`` depends on everything ``automtd/plan/__init__.py`` imports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "automtd"
MAX_FUNCTION_LEVEL_IMPORTS = 10
MAX_MODULE_LINES = 400


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    function_level: bool
    has_reason: bool


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _edges() -> list[Edge]:
    modules = _modules()
    edges: list[Edge] = []
    for name, path in modules.items():
        source_lines = path.read_text().splitlines()
        is_package = path.name == "__init__.py"

        def visit(
            node: ast.AST,
            in_function: bool,
            *,
            name: str = name,
            is_package: bool = is_package,
            source_lines: list[str] = source_lines,
        ) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    for other in child.orelse:
                        visit(other, in_function)
                    continue
                if isinstance(child, ast.Import | ast.ImportFrom):
                    if isinstance(child, ast.Import):
                        targets = [alias.name for alias in child.names]
                    else:
                        base = child.module or ""
                        if child.level:
                            package = name if is_package else name.rpartition(".")[0]
                            for _ in range(child.level - 1):
                                package = package.rpartition(".")[0]
                            base = package + ("." + base if base else "")
                        targets = [base] + [f"{base}.{alias.name}" for alias in child.names]
                    resolved = {_resolve(t, modules) for t in targets if t.split(".")[0] == "automtd"}
                    line = source_lines[child.lineno - 1]
                    previous = source_lines[child.lineno - 2] if child.lineno > 1 else ""
                    reason = "#" in line or previous.strip().startswith("#")
                    for target in sorted(t for t in resolved if t and t != name):
                        edges.append(Edge(name, target, child.lineno, in_function, reason))
                    continue
                is_function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                visit(child, in_function or is_function)

        visit(ast.parse(path.read_text()), False)
    return edges


def _cycles(edges: list[Edge]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_edges()) == []


def test_few_function_level_imports_each_with_a_reason() -> None:
    statements = {(e.source, e.line): e for e in _edges() if e.function_level}
    assert len(statements) <= MAX_FUNCTION_LEVEL_IMPORTS, sorted(statements)
    unexplained = sorted(key for key, edge in statements.items() if not edge.has_reason)
    assert unexplained == [], "a function-level import needs a one-line comment saying why"


def _package_of(module: str) -> str:
    return module if (ROOT.parent / module.replace(".", "/") / "__init__.py").is_file() else module.rpartition(".")[0]


def _private_imports(edges: list[Edge]) -> list[tuple[str, int, str]]:
    """``(source, line, target)`` where ``target`` is a private module of another package than the source's
    (``automtd._errors`` is shared by every package and allowed)."""
    out = []
    for edge in edges:
        package, _, leaf = edge.target.rpartition(".")
        if leaf.startswith("_") and package not in ("automtd", _package_of(edge.source)):
            out.append((edge.source, edge.line, edge.target))
    return sorted(out)


def test_packages_import_each_other_only_through_their_init() -> None:
    assert _private_imports(_edges()) == []


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = [Edge("a", "b", 1, False, False), Edge("b", "c", 1, False, False), Edge("c", "a", 1, False, False)]
    assert _cycles(edges) == [["a", "b", "c"]]


def test_the_private_import_finder_finds_one() -> None:
    edges = [
        Edge("automtd.cli._front", "automtd.search._run", 1, False, False),
        Edge("automtd.search._run", "automtd.search._study", 2, False, False),
        Edge("automtd.search", "automtd.search._run", 3, False, False),
        Edge("automtd.plan._make", "automtd._errors", 4, False, False),
    ]
    assert _private_imports(edges) == [("automtd.cli._front", 1, "automtd.search._run")]
