"""The benchmark runner: a --quick run measures or explains every system; units of it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lepton_compiler.errors import OptionError
from lepton_compiler.examples.bench.runner import PeakMemory, fidelity, main, make_cases
from lepton_compiler.examples.bench.systems import SYSTEMS


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--out", str(out)]) == 0
    (js,) = out.glob("*_quick.json")
    return out, json.loads(js.read_text())


def test_quick_run_measures_or_explains_every_system(quick):
    _, results = quick
    rows = {(r["model"], r["system"]): r for r in results["rows"]}
    assert set(rows) == {(m, s) for m in ("mlp_small", "tiny_cnn") for s in SYSTEMS}
    for r in rows.values():
        if r["available"]:
            assert 0 < r["min_ms"] <= r["median_ms"] and r["compile_s"] >= 0
            assert r["cosine"] > 0.999 and r["top1_agreement"] >= 0.9, r
            assert r["vs_onnxruntime_fp32"] > 0 and r["artifact_bytes"] > 0
        else:
            assert r["reason"], r
    for model in ("mlp_small", "tiny_cnn"):
        ours = rows[(model, "lepton_npu_int8")]
        assert ours["available"] and ours["vs_onnxruntime_int8"] > 0
        sim = ours["sim"]
        assert sim["cycles"] > 0 and 0 < sim["mac_utilisation"] <= 1
        assert 0 < sim["roofline_cycles"] <= sim["cycles"]
        assert rows[(model, "lepton_host_fp32")]["max_abs_error"] < 1e-4
    machine = results["machine"]
    assert machine["cpu"] and machine["cpu_flags"] and machine["threads"] == 2


def test_quick_run_writes_markdown_and_charts(quick):
    out, _ = quick
    md = next(out.glob("*_quick.md")).read_text()
    for system in SYSTEMS:
        assert f"| {system} |" in md
    assert "## Lepton NPU (sim)" in md and "unavailable:" in md
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_fidelity_figures():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    out = ref + np.array([[0, 0, 0], [0, 5, 0]])
    got = fidelity(out, ref)
    assert got["max_abs_error"] == 5 and got["top1_agreement"] == 0.5
    cosine = out.ravel() @ ref.ravel() / (np.linalg.norm(out) * np.linalg.norm(ref))
    assert got["cosine"] == pytest.approx(cosine)
    assert np.isnan(fidelity(np.zeros(4), ref)["cosine"])  # shape mismatch is not a figure


def test_peak_memory_sees_an_allocation():
    with PeakMemory() as mem:
        block = np.ones(48 * 2**20 // 8)  # 48 MiB, touched
        del block
    assert mem.mb is None or mem.mb >= 40


def test_unknown_models_and_systems_are_refused(tmp_path):
    with pytest.raises(OptionError, match=r"unknown benchmark model.*available: resnet18"):
        make_cases(["resnet19"])
    with pytest.raises(OptionError, match=r"unknown system.*available: torch_eager_fp32"):
        main(["--models", "mlp_small", "--systems", "tensorrt", "--out", str(tmp_path)])
