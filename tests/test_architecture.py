"""The import graph keeps the architecture: one direction between the packages, no cycles.

Read from the source with `ast` (every import, also those inside functions: a lazy import is
still a dependency), so a new edge that breaks the design fails here, not in review.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("controlplane", "installer")


@cache
def modules() -> dict[str, Path]:
    """Every module of both packages by dotted name (a package is its `__init__`)."""
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str) -> str | None:
    """The project module that `import name` loads (the longest known prefix), or None."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """module -> the project modules it imports (not its own parent packages)."""
    graph = {}
    for module, path in modules().items():
        targets = set()
        for name in _imported_names(ast.parse(path.read_text(encoding="utf-8"))):
            target = _resolve(name)
            if target and target != module and not module.startswith(target + "."):
                targets.add(target)
        graph[module] = frozenset(targets)
    return graph


def subpackage(module: str) -> str:
    """`controlplane.gateway.call` -> `controlplane.gateway`; a top-level module stays."""
    return ".".join(module.split(".")[:2])


def cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def package_graph() -> dict[str, frozenset[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in import_graph().items():
        for target in targets:
            if subpackage(module) != subpackage(target):
                edges[subpackage(module)].add(subpackage(target))
    return {name: frozenset(targets) for name, targets in edges.items()}


def test_the_control_plane_never_imports_the_installer() -> None:
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module.startswith("controlplane")
        for target in targets
        if target.startswith("installer")
    )
    assert offenders == []


def test_no_module_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_no_cycles_between_subpackages() -> None:
    """Each subpackage is a layer: if a imports b, nothing of b imports a."""
    assert cycles(package_graph()) == []


def test_the_graph_reader_sees_what_it_must() -> None:
    """Guards the test itself: known edges are found, and a cycle is reported as one."""
    graph = import_graph()
    assert "controlplane.core.config" in graph["controlplane.main"]
    assert any(t.startswith("controlplane.") for t in graph["installer.provision.install"])
    assert cycles({"a": frozenset({"b"}), "b": frozenset({"a"}), "c": frozenset()}) == [["a", "b"]]
