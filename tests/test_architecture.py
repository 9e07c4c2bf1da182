"""The package's import graph (issue 22): no cycle, and no module imports the package root.

A static walk of every ``import`` in ``src/deepinside`` (function-level imports included: a cycle
hidden in a function is still a cycle for a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "deepinside"


def import_graph() -> dict[str, set[str]]:
    """``{module: {modules of the package it imports}}``; ``"__init__"`` is the package root."""
    mods = {p.stem for p in PKG.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for p in PKG.glob("*.py"):
        out: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".")
                if node.level == 1 or parts[0] == "deepinside":
                    rel = parts if node.level == 1 else parts[1:]
                    if rel and rel[0]:
                        out.add(rel[0])
                    else:   # `from . import x` / `from deepinside import x`
                        out.update({a.name for a in node.names if a.name in mods} or {"__init__"})
                        if any(a.name not in mods for a in node.names):
                            out.add("__init__")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    if parts[0] == "deepinside":
                        out.add(parts[1] if len(parts) > 1 else "__init__")
        out.discard(p.stem)
        graph[p.stem] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    graph = import_graph()
    assert {"maps", "occlusion", "features", "layers", "hooks", "inputs"} <= set(graph)
    assert cycles(graph) == []


def test_no_module_imports_the_package_root():
    graph = import_graph()
    back = sorted(m for m, deps in graph.items() if "__init__" in deps and m != "__init__")
    assert back == [], f"these modules import deepinside/__init__: {back}"


def test_layer_plumbing_lives_in_layers():
    """Only hooks.py registers forward hooks; only layers.py resolves a layer by name."""
    for p in PKG.glob("*.py"):
        text = p.read_text()
        if p.stem != "hooks":
            assert "register_forward_hook(" not in text and "register_forward_pre_hook(" not in text, p.name
        if p.stem != "layers":
            assert "def resolve_layer" not in text and "def _forward_to" not in text, p.name
