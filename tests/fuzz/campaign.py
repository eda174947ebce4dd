"""Fuzz campaigns: malformed models, mutated artifacts, random graphs vs onnxruntime.

    python -m tests.fuzz.campaign [--long] [--seed N] [--only malformed,artifacts,differential]

Every case runs in its own child process (forked from a server that imported the compiler
once) with a timeout. The default sizes are the CI campaign (run by
``tests/fuzz/test_campaigns.py``); ``--long`` runs thousands of cases for a nightly job.
Prints one summary per campaign and writes them as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

CI_SIZES = {"malformed": 308, "artifacts": 210, "differential": 10, "int8": 6,
            "values": 300, "float_values": 60}
LONG_SIZES = {"malformed": 3000, "artifacts": 2000, "differential": 100, "int8": 50,
              "values": 3000, "float_values": 600}
FLOAT_VALUE_MODELS = 3     # random fp32 models the float-value cases run on
GRAPHS_PER_MODEL = 15      # fp32 differential: 10 models x 15 graphs = 150 graphs (CI)
INT8_GRAPHS_PER_MODEL = 3  # int8 differential: 6 x 3 = 18 graphs (CI)
OPT0_EVERY = 4             # every fourth fp32 model is also built with opt_level=0
TIMEOUT = 120.0


def malformed(count: int, seed: int, parallel: int = 2) -> dict:
    from . import cases, corpus, harness, mutations

    models = corpus.corpus()
    jobs, meta = [], {}
    for case, data, kind, source, node in mutations.cases(models, count, seed):
        jobs.append((case, (data,)))
        meta[case] = {"mutation": kind, "model": source, "node": node}
    results = harness.run_all(cases.malformed, jobs, TIMEOUT, parallel)
    for case, r in results.items():
        r.update(meta[case])
        node = meta[case]["node"]
        if r["outcome"] == "lepton-error" and node:
            names = [n.name for n in models[r["model"]].graph.node] + [node]
            # The mutated node itself, or the node where the inconsistency it causes
            # surfaces (a changed concat axis is reported where the shapes disagree).
            r["names_node"] = f"'{node}'" in r["message"] or f"node name: {node}" in r["message"]
            r["names_a_node"] = any(f"'{n}'" in r["message"] or f"node name: {n}" in
                                    r["message"] for n in names)
    node_faults = [r for r in results.values() if r["outcome"] == "lepton-error" and r["node"]]
    return _summary("malformed", results, {
        "node_faults": len(node_faults),
        "node_faults_naming_the_mutated_node": sum(r["names_node"] for r in node_faults),
        "node_faults_naming_a_node": sum(r["names_a_node"] for r in node_faults)})


def artifacts(count: int, seed: int, parallel: int = 2) -> dict:
    import lepton_compiler

    from . import artifacts as mutate
    from . import cases, corpus, harness

    with tempfile.TemporaryDirectory(prefix="lepton-fuzz-artifacts-") as tmp:
        folder = Path(tmp)
        model = corpus.corpus()["conv_relu_pool"].SerializeToString()
        valid_path = lepton_compiler.build(model).export(folder / "valid.lepton")
        valid = valid_path.read_bytes()
        loads, meta = [("valid", (str(valid_path),))], {}
        meta["valid"] = {"mutation": "none", "identical": True}
        for case, data, kind in mutate.cases(valid, count, seed):
            path = folder / f"{case}.lepton"
            path.write_bytes(data)
            loads.append((case, (str(path),)))
            meta[case] = {"mutation": kind, "identical": data == valid}
        # random wrong inputs against the valid artifact
        calls = [(f"inputs-{i}", (str(valid_path), seed + i)) for i in range(3)]
        results = harness.run_all(cases.artifact, loads, TIMEOUT, parallel)
        results.update(harness.run_all(cases.bad_inputs, calls, TIMEOUT, parallel))
    for case, r in results.items():
        r.update(meta.get(case, {"mutation": "bad inputs"}))
    control = results.pop("valid")
    extra = {"control_loads": control["outcome"] == "loaded",
             "dlopen_before_refusal": sum(bool(r.get("dlopen")) for r in results.values()
                                          if r["outcome"] != "loaded"),
             "identical_mutants": sum(r.get("identical", False) for r in results.values())}
    return _summary("artifacts", results, extra)


def differential(count: int, int8_count: int, seed: int, parallel: int = 2) -> dict:
    from . import cases, graphs, harness

    jobs, meta = [], {}
    for i in range(count):
        data, per_graph = graphs.random_model(seed * 100_000 + i, GRAPHS_PER_MODEL)
        jobs.append((f"fp32-{i}", (data, i, False, i % OPT0_EVERY == 0)))
        meta[f"fp32-{i}"] = {"graphs": len(per_graph), "family": "fp32"}
    for i in range(int8_count):
        data, per_graph = graphs.random_int8_model(seed * 100_000 + i, INT8_GRAPHS_PER_MODEL)
        jobs.append((f"int8-{i}", (data, i, True, False)))
        meta[f"int8-{i}"] = {"graphs": len(per_graph), "family": "int8"}
    results = harness.run_all(cases.differential, jobs, TIMEOUT * 2, parallel)
    for case, r in results.items():
        r.update(meta[case])
    graphs_checked = sum(r["graphs"] for r in results.values()
                         if r["outcome"] == "compiled-correct")
    int8_exact = sum(r["graphs"] for r in results.values() if r.get("int8"))
    opt0 = sum(r["graphs"] for r in results.values() if r.get("opt_level_0"))
    # An int8 model with a layer that stays float has no bit-exact integer reference: the
    # build says so (a QuantizationError), which is an explained outcome, not a mismatch.
    unexplained = [c for c, r in results.items() if r["outcome"] not in (
        "compiled-correct", "lepton-error")]
    return _summary("differential", results, {
        "graphs_checked": graphs_checked, "int8_graphs_bit_exact": int8_exact,
        "graphs_opt_level_0_agree": opt0, "unexplained": unexplained,
        "refusals": {c: f"{r['type']}: {r['message'][:200]}" for c, r in results.items()
                     if r["outcome"] == "lepton-error"}})


def values(count: int, float_count: int, seed: int, parallel: int = 2) -> dict:
    """Run-time values: the value-ops model with out-of-range indices, zero divisors and
    ``INT_MIN / -1`` (``count`` cases), random fp32 graphs with NaN/Inf/huge inputs
    (``float_count``); each case loads the artifact in its own child and compares with
    onnxruntime (see ``cases.values``)."""
    import lepton_compiler

    from . import cases, graphs, harness, value_models

    with tempfile.TemporaryDirectory(prefix="lepton-fuzz-values-") as tmp:
        folder = Path(tmp)
        model = value_models.value_ops_model()[0].SerializeToString()
        path = lepton_compiler.build(model).export(folder / "values.lepton")
        jobs = [(f"index-{i}", (str(path), model, seed * 100_000 + i, "index"))
                for i in range(count)]
        for m in range(FLOAT_VALUE_MODELS):
            data, _ = graphs.random_model(seed * 100_000 + m, GRAPHS_PER_MODEL)
            fpath = lepton_compiler.build(data).export(folder / f"float{m}.lepton")
            jobs += [(f"float-{m}-{i}", (str(fpath), data, seed * 100_000 + i, "float"))
                     for i in range(float_count // FLOAT_VALUE_MODELS)]
        results = harness.run_all(cases.values, jobs, TIMEOUT, parallel)
    for case, r in results.items():
        r["family"] = case.split("-")[0]
    by_family: dict[str, Counter] = {}
    for r in results.values():
        by_family.setdefault(r["family"], Counter())[r["outcome"]] += 1
    signals = [c for c, r in results.items() if r["outcome"] in ("crash", "hang")]
    return {"campaign": "values", "cases": len(results),
            "by_family": {k: dict(v) for k, v in by_family.items()},
            "by_mutation": _count_mutations(results),
            "signals_or_hangs": signals,
            "failures": {c: r for c, r in sorted(results.items())
                         if r["outcome"] not in (*cases.FLOAT_VERDICTS[:-1], "both-refuse")},
            "seconds": round(sum(r["seconds"] for r in results.values()), 1)}


def _count_mutations(results: dict) -> dict[str, int]:
    counts = Counter(f"{r['family']}:{r.get('mutation', '-')}:{r['outcome']}"
                     for r in results.values())
    return dict(sorted(counts.items()))


def _summary(name: str, results: dict, extra: dict) -> dict:
    outcomes = Counter(r["outcome"] for r in results.values())
    by_mutation: dict[str, Counter] = {}
    for r in results.values():
        by_mutation.setdefault(r.get("mutation", r.get("family", "-")), Counter())[
            r["outcome"]] += 1
    return {"campaign": name, "cases": len(results), "outcomes": dict(outcomes),
            "by_kind": {k: dict(v) for k, v in sorted(by_mutation.items())},
            "failures": {case: r for case, r in sorted(results.items())
                         if r["outcome"] not in ("lepton-error", "compiled-correct")},
            "seconds": round(sum(r["seconds"] for r in results.values()), 1), **extra}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="thousands of cases (nightly)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="malformed,artifacts,differential,values")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--json", default=None, help="write the summaries here")
    args = parser.parse_args(argv)
    os.environ.setdefault("LEPTON_PROGRESS", "0")
    sizes = LONG_SIZES if args.long else CI_SIZES
    summaries = []
    for name in args.only.split(","):
        start = time.time()
        if name == "malformed":
            s = malformed(sizes["malformed"], args.seed, args.parallel)
        elif name == "artifacts":
            s = artifacts(sizes["artifacts"], args.seed, args.parallel)
        elif name == "values":
            s = values(sizes["values"], sizes["float_values"], args.seed, args.parallel)
        else:
            s = differential(sizes["differential"], sizes["int8"], args.seed, args.parallel)
        s["wall_seconds"] = round(time.time() - start, 1)
        summaries.append(s)
        shown = {k: v for k, v in s.items() if k != "failures"}
        print(json.dumps(shown, indent=1))
        for case, r in list(s["failures"].items())[:20]:
            print(f"  FAILURE {case}: {json.dumps(r)[:400]}")
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=1) + "\n")
    return summaries


if __name__ == "__main__":
    main()
