"""The public namespace: every submodule imports the usual ways, ``ctrzip.compress`` stays the
verb, and the package has no import cycles (the layout rule of ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import ctrzip

ROOT = Path(ctrzip.__file__).resolve().parent


def all_modules() -> list[str]:
    """Every module and package under ``ctrzip``, found on disk (not from what is imported)."""
    names = ["ctrzip"]
    for info in pkgutil.walk_packages([str(ROOT)], prefix="ctrzip."):
        names.append(info.name)
    return sorted(names)


MODULES = all_modules()


def test_walk_finds_the_packages() -> None:
    # the walk itself must see the nested families, or every test below checks too little
    for name in ("ctrzip.compression.mec.method", "ctrzip.compression.lowrank.fold", "ctrzip.cli.main"):
        assert name in MODULES
    assert len(MODULES) == len(list(ROOT.rglob("*.py")))


@pytest.mark.parametrize("name", MODULES)
def test_submodule_imports_every_usual_way(name: str) -> None:
    mod = importlib.import_module(name)  # import ctrzip.x.y
    assert isinstance(mod, types.ModuleType) and mod.__name__ == name
    if "." in name:
        parent, leaf = name.rsplit(".", 1)
        # ``from ctrzip.x import y`` and ``import ctrzip.x.y as m`` both resolve the attribute
        # ``y`` of the parent package: it must be this module, not a function of the same name
        got = getattr(importlib.import_module(parent), leaf)
        assert got is mod, f"{parent}.{leaf} is {type(got).__name__}, not the module {name}"
        ns: dict[str, object] = {}
        exec(f"import {name} as m", ns)  # noqa: S102  (the literal statement a user writes)
        assert ns["m"] is mod
        exec(f"from {parent} import {leaf} as m2", ns)  # noqa: S102
        assert ns["m2"] is mod


def test_compress_is_the_verb_and_compression_the_package() -> None:
    import ctrzip.compression.mec as mec
    import ctrzip.compression.mec.method as m
    from ctrzip.compression import lowrank
    from ctrzip.compression.api import compress

    assert callable(ctrzip.compress) and ctrzip.compress is compress
    assert isinstance(ctrzip.compression, types.ModuleType)
    assert m.MECConfig is mec.MECConfig is ctrzip.MECConfig
    assert lowrank.__name__ == "ctrzip.compression.lowrank"


def _module_file(name: str) -> Path:
    rel = Path(*name.split(".")[1:])
    pkg = ROOT / rel / "__init__.py"
    return pkg if pkg.exists() else ROOT / rel.with_suffix(".py")


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported (module level, also inside try/if,
    never inside a function or a ``TYPE_CHECKING`` block)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the ctrzip modules it imports at import time (static, from the source)."""
    known = set(MODULES)
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        path = _module_file(name)
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _top_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in known}
                continue
            base = node.module or ""
            if node.level:  # relative import
                pkg = name if is_pkg else name.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rsplit(".", 1)[0]
                base = f"{pkg}.{base}" if base else pkg
            if base not in known:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                edges.add(sub if sub in known else base)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert graph["ctrzip.compression.mec.method"] >= {"ctrzip.compression.api", "ctrzip.config"}
    found = cycles(graph)
    assert not found, f"import cycles between modules: {found}"


_FRESH = """
import ctrzip.compression.mec as mec
import ctrzip.compression.mec.method as m
from ctrzip.compression import lowrank
from ctrzip.compression.lowrank import fold
import ctrzip.data.synth.driver as driver
import ctrzip
assert callable(ctrzip.compress) and m.MECConfig is mec.MECConfig
assert callable(ctrzip.data.synth.generate) and driver.generate is ctrzip.data.synth.generate
print(fold.__name__, lowrank.__name__)
"""


def test_issue_statements_in_a_fresh_interpreter() -> None:
    """The statements of the issue, first thing in a new interpreter (no module imported before
    them by the test session, so import order cannot hide a problem)."""
    res = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ctrzip.compression.lowrank.fold", "ctrzip.compression.lowrank"]
