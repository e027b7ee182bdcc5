"""The layering ARCHITECTURE.md states, checked on the source: no import cycle (every import
counts: module level, ``TYPE_CHECKING`` and function level), nothing imports the package root,
module and facade sizes, and every module named in ARCHITECTURE.md's table. CI also runs
``lint-imports`` (the layers contract in pyproject.toml); this test needs no extra package."""

from __future__ import annotations

import ast
import re
from collections import defaultdict

from tests.paths import ROOT

PACKAGE = ROOT / "beto_search"
MAX_MODULE_LINES = 500
MAX_FACADE_LINES = 250


def _modules() -> dict[str, tuple[ast.Module, bool]]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        mods[name] = (ast.parse(path.read_text(encoding="utf-8")), is_package)
    return mods


def _imports() -> dict[str, set[str]]:
    """module -> the modules of this package it imports (any kind of import)."""
    mods = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, (tree, is_package) in mods.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [
                    f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module
                    for a in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    assert _cycles(_imports()) == []


def test_nothing_inside_imports_the_package_root() -> None:
    # the root re-exports the engine: importing it from below would close a loop through it
    importers = sorted(m for m, targets in _imports().items() if "beto_search" in targets)
    assert importers == []


def test_no_module_over_500_lines_and_a_small_facade() -> None:
    sizes = {
        p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}
    tree = ast.parse((PACKAGE / "engine.py").read_text(encoding="utf-8"))
    facade = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SearchEngine")
    assert facade.end_lineno is not None
    assert facade.end_lineno - facade.lineno + 1 <= MAX_FACADE_LINES


def test_architecture_md_names_every_module() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", table))
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py" and rel.parent != rel.parent.parent:
            continue  # a package is named by its folder, below
        candidates = {rel.as_posix()}
        # a module inside a package may be named on its own or through its package's row
        for parent in rel.parents:
            if parent.as_posix() != ".":
                candidates.add(parent.as_posix() + "/")
        if rel.as_posix() != "__init__.py" and not candidates & named:
            missing.append(rel.as_posix())
    assert missing == []
