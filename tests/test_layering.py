"""Imports go one way (#14): no cycles between our modules, command-line code only in cli/.

Read with the standard library's ``ast`` from the source, function-level imports included
(a lazy import hides a cycle from Python but not from a reader).
"""

from __future__ import annotations

import ast
import pathlib

from conftest import ROOT

PACKAGE = ROOT / "hybrenet_jax"
#: Modules outside cli/ that are themselves command-line entry points (``python -m ...``).
ENTRY_POINTS = {"hybrenet_jax.__main__", "hybrenet_jax.cost.calibrate"}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """Our modules that ``name`` imports anywhere in its source (``from pkg import mod``
    counts as importing ``pkg.mod`` where that is a module, else ``pkg``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                          for alias in node.names]
        else:
            continue
        for target in candidates:
            while target and target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_cycle_finder_finds_a_cycle():
    """The checker itself can fail: a two-module loop and a three-module loop are found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c", "a"}, "f": set()}
    assert sorted(_cycles(graph)) == [["a", "b"], ["c", "d", "e"]]


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_command_line_code_only_in_cli():
    """Nothing outside cli/ imports cli/ or argparse, except declared entry points."""
    graph = _graph()
    offenders = sorted(name for name, targets in graph.items()
                       if not name.startswith("hybrenet_jax.cli") and name not in ENTRY_POINTS
                       and any(t.startswith("hybrenet_jax.cli") for t in targets))
    assert offenders == []
    uses_argparse = sorted(
        name for name, path in _modules().items()
        if not name.startswith("hybrenet_jax.cli") and name not in ENTRY_POINTS
        and any(isinstance(node, (ast.Import, ast.ImportFrom))
                and "argparse" in ([a.name for a in node.names]
                                   if isinstance(node, ast.Import) else [node.module])
                for node in ast.walk(ast.parse(path.read_text()))))
    assert uses_argparse == []


def test_snl_and_training_know_nothing_of_the_pipelines():
    """Run directories and the training core live in train/: snl/ and train/ import no
    pipeline module (the pipelines build on them, not the other way round)."""
    graph = _graph()
    leaks = sorted((name, target) for name, targets in graph.items()
                   if name.startswith(("hybrenet_jax.snl", "hybrenet_jax.train"))
                   for target in targets if target.startswith("hybrenet_jax.pipeline"))
    assert leaks == []


def test_the_untyped_config_stops_at_the_boundary():
    """Only config.py (files, overrides) handles ml_collections ConfigDicts; everything
    else reads the typed config of hybrenet_jax.schema."""
    users = sorted(
        name for name, path in _modules().items()
        if any(isinstance(node, (ast.Import, ast.ImportFrom))
               and "ml_collections" in ([a.name for a in node.names]
                                        if isinstance(node, ast.Import) else [node.module])
               for node in ast.walk(ast.parse(path.read_text()))))
    assert users == ["hybrenet_jax.config"]


def test_printing_only_in_cli():
    """The library reports through a ``log`` callable or ``logging``; ``print`` is the
    command line's (cli/ and the declared entry points)."""
    printers = sorted(
        name for name, path in _modules().items()
        if not name.startswith("hybrenet_jax.cli") and name not in ENTRY_POINTS
        and any(isinstance(node, ast.Name) and node.id == "print"
                for node in ast.walk(ast.parse(path.read_text()))))
    assert printers == []
