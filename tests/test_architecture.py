"""The package's import graph (issue 22): no cycle, no module imports the package root, and the
sub-packages are layers (core <- methods <- measures <- figures <- cli/jobs).

A static walk of every ``import`` in ``src/deepinside`` (function-level imports included: a cycle
hidden in a function is still a cycle for a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "deepinside"
LAYERS = ("core", "methods", "measures", "figures", "")   # "": the top level (cli, jobs, ...)


def _name(p: Path) -> str:
    """``src/deepinside/methods/maps.py`` -> ``"methods.maps"``; ``__init__`` -> its package."""
    rel = p.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] or ["__init__"]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {_name(p): p for p in PKG.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """``{module: {modules of the package it imports}}`` with dotted names relative to the package
    (``"methods.maps"``); ``"__init__"`` is the package root."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, p in mods.items():
        pkg = name.split(".")[:-1] if p.stem != "__init__" else name.split(".")
        if name == "__init__":
            pkg = []
        out: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text())):
            targets: list[list[str]] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else list(pkg)
                elif (node.module or "").split(".")[0] == "deepinside":
                    base = []
                else:
                    continue
                mod = (node.module or "").split(".") if node.module else []
                if not node.level:
                    mod = mod[1:]
                stem = base + mod
                for a in node.names:
                    cand = ".".join(stem + [a.name])
                    targets.append((stem + [a.name]) if cand in mods else stem)
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "deepinside"]
            for t in targets:
                out.add(".".join(t) if t else "__init__")
        out.discard(name)
        graph[name] = {t for t in out if t in mods or t == "__init__"}
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


def _layer(module: str) -> int:
    if module == "_version":   # a leaf (one constant, no imports): below every layer
        return 0
    head = module.split(".")[0]
    return LAYERS.index(head) if head in LAYERS else len(LAYERS) - 1


def test_the_walk_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_walk_resolves_relative_imports():
    graph = import_graph()
    assert "core.models" in graph["methods.maps"] and "methods.backprop" in graph["methods.maps"]
    assert "methods.maps" in graph["measures.evaluation"]


def test_no_import_cycle():
    graph = import_graph()
    assert {"methods.maps", "methods.occlusion", "methods.features", "core.layers", "core.hooks",
            "core.inputs"} <= set(graph)
    assert cycles(graph) == []


def test_no_module_imports_the_package_root():
    graph = import_graph()
    back = sorted(m for m, deps in graph.items() if "__init__" in deps and m != "__init__")
    assert back == [], f"these modules import deepinside/__init__: {back}"


def test_sub_packages_are_layers():
    """A module imports only from its own sub-package or those before it in LAYERS."""
    graph = import_graph()
    up = sorted((m, d) for m, deps in graph.items() for d in deps
                if d != "__init__" and m not in LAYERS and _layer(d) > _layer(m))
    assert up == [], f"imports that run up the layers: {up}"


def test_layer_plumbing_lives_in_layers():
    """Only hooks.py registers forward hooks; only layers.py resolves a layer by name."""
    for p in PKG.rglob("*.py"):
        text = p.read_text()
        if p.stem != "hooks":
            assert "register_forward_hook(" not in text and "register_forward_pre_hook(" not in text, p.name
        if p.stem != "layers":
            assert "def resolve_layer" not in text and "def _forward_to" not in text, p.name
