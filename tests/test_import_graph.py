"""The compiler's import graph is a DAG: function-level imports count, package ``__init__``
re-exports do not (importing a submodule runs its package's ``__init__``, an edge every
module would share)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
#: Source folder -> the package it installs as (``pyproject.toml``'s package-dir).
PACKAGES = {"lepton_compiler": "lepton_compiler", "passes": "lepton_compiler.passes",
            "target": "lepton_compiler.target"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def import_graph() -> nx.DiGraph:
    """Module -> module it imports (anywhere in its body), within the compiler."""
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                while target and target not in modules:  # ``import a.b.c`` names a.b.c
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target)
    return graph


def test_import_graph_is_acyclic():
    graph = import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join([*c, c[0]]) for c in sorted(cycles, key=len)[:20])


def test_import_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    # ``cli.cmd_compile`` imports the composer inside the function.
    assert graph.has_edge("lepton_compiler.cli", "lepton_compiler.pipeline")
    # ``from lepton_compiler import tvm_compat`` names the submodule, not the package.
    assert graph.has_edge("lepton_compiler.passes.qgraph", "lepton_compiler.tvm_compat")
    assert not graph.has_edge("lepton_compiler.passes.qgraph", "lepton_compiler")
