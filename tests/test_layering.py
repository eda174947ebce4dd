"""The layers of the tree: hardware and passes never reach up into orchestration, and the
compiler core never imports the examples (zoo, datasets, demo, benchmark harness) or the CLI."""

from __future__ import annotations

from .test_import_graph import import_graph

#: What target/ and passes/ may import from the rest of the compiler (leaf utilities).
LEAVES = {"lepton_compiler.errors", "lepton_compiler.tvm_compat", "lepton_compiler.version"}


def _edges_from(prefix: str):
    return [(a, b) for a, b in import_graph().edges() if a.startswith(prefix)]


def test_target_imports_only_target_and_leaf_utilities():
    bad = [(a, b) for a, b in _edges_from("lepton_compiler.target")
           if not b.startswith("lepton_compiler.target") and b not in LEAVES]
    assert not bad, bad


def test_passes_import_only_passes_target_and_leaf_utilities():
    bad = [(a, b) for a, b in _edges_from("lepton_compiler.passes")
           if not b.startswith(("lepton_compiler.passes", "lepton_compiler.target"))
           and b not in LEAVES]
    assert not bad, bad


def test_core_never_imports_examples_or_cli():
    graph = import_graph()
    outside = ("lepton_compiler.examples", "lepton_compiler.cli")
    bad = [(a, b) for a, b in graph.edges()
           if b.startswith(outside) and not a.startswith(outside)
           and a != "lepton_compiler"]  # the package's lazy ``zoo`` attribute
    assert not bad, bad


def test_one_composer_spells_the_stage_sequence():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    hits = []
    for folder in ("lepton_compiler", "passes", "target"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text()
            if 'run.stage("import")' in text or "frontend.import_model(" in text:
                hits.append(path.relative_to(root).as_posix())
    assert hits == ["lepton_compiler/pipeline.py"], hits
