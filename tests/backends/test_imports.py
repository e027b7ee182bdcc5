"""The encoder protocols are a leaf, and the encoder, the backends and the rerankers import one
another without a cycle: every import counts (module level, ``TYPE_CHECKING``, inside functions),
as import-linter counts them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import beto_search
from beto_search.backends.factory import FACTORIES, QUERY_FACTORY, resolve

PACKAGE = Path(beto_search.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("beto_search", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (a name imported from a package counts as
    its submodule when there is one, else as the package)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package[: len(package) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    edges[mod].add(target)
    return edges


def _reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), list(edges[start])
    while todo:
        mod = todo.pop()
        if mod == goal:
            return True
        if mod not in seen:
            seen.add(mod)
            todo.extend(edges[mod])
    return False


def test_encoder_is_a_leaf() -> None:
    assert _graph()["beto_search.encoder"] <= {"beto_search.errors", "beto_search.types"}


def test_no_import_cycle_through_the_encoder_backends_or_rerank() -> None:
    edges = _graph()
    ours = [
        m
        for m in edges
        if m == "beto_search.encoder"
        or m.startswith(("beto_search.backends", "beto_search.rerank"))
    ]
    assert "beto_search.backends.factory" in ours and "beto_search.rerank.compiled" in ours
    cyclic = sorted(m for m in ours if _reaches(edges, m, m))
    assert cyclic == []


@pytest.mark.parametrize("target", [*sorted(set(FACTORIES.values())), QUERY_FACTORY])
def test_every_factory_string_names_a_function(target: str) -> None:
    assert callable(resolve(target))
