"""``lepton profile`` and Session.profile on a compiled int8 CNN: every kernel, sums, HTML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import lepton_runtime
from lepton_compiler import QuantConfig, build
from lepton_compiler.cli import main
from lepton_compiler.examples import zoo

NS = {"h": "http://www.w3.org/1999/xhtml", "s": "http://www.w3.org/2000/svg"}


@pytest.fixture(scope="module")
def cnn_int8(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    calib = [(rng.standard_normal((2, 3, 16, 16)).astype(np.float32),) for _ in range(3)]
    compiled = build(zoo.small_cnn(), (x,), target="lepton",
                     quantize=QuantConfig(calibration_data=calib))
    return compiled.export(tmp_path_factory.mktemp("profile") / "cnn.lepton"), x


def test_sim_profile_lists_every_kernel_and_its_totals_are_the_sums(cnn_int8):
    path, x = cnn_int8
    session = lepton_runtime.load(path, mode="sim")
    profile = session.profile(x)
    calls = lepton_runtime.inspect(path)["calls"]
    assert [k.kernel for k in profile.kernels] == calls  # every call, in order
    npu = [k for k in profile.kernels if k.unit == "npu"]
    assert all(k.cycles > 0 and k.layer for k in npu)
    gemm = {"conv2d_0", "conv2d_1", "conv2d_2", "dense_0"}  # the matrix engine's layers
    vector = {k.layer for k in npu} - gemm   # the vector unit's (a transpose: DMA only)
    assert gemm < {k.layer for k in npu} and vector and all(
        k.counters["compute_cycles"] == 0 and k.counters["vector_cycles"] + k.counters[
            "dma_transfers"] > 0 for k in npu if k.layer in vector)
    assert all(k.ops[0] in ("nn.conv2d", "matmul") for k in npu if k.layer in gemm)
    # host kernels (the float edges) are charged the spec's stated host cost
    cost = session.manifest["target"]["host_fallback"]
    host = [k for k in profile.kernels if k.unit == "host"]
    assert host and all(k.cycles >= cost["call_cycles"] for k in host)
    assert profile.total_cycles == sum(k.cycles for k in profile.kernels)
    # The per-kernel counters add up to what the NPU counted over one whole run.
    counter, names = session._npu["counter"], session.manifest["target"]["sim_counters"]
    counter(-1)
    session.run(x)
    whole = {name: int(counter(i)) for i, name in enumerate(names)}
    for name in ("macs_issued", "dram_bytes", "compute_cycles", "dma_cycles", "vector_cycles",
                 "vector_lanes"):
        assert whole[name] == sum(k.counters[name] for k in npu) > 0, name
    for k in npu:
        assert 0 < profile.roofline_cycles(k) <= k.cycles
        if k.layer in gemm:
            assert k.macs == k.macs_useful <= k.macs_issued


def test_cli_profile_writes_html_and_json(cnn_int8, tmp_path, capsys):
    path, _ = cnn_int8
    html, js = tmp_path / "p.html", tmp_path / "p.json"
    assert main(["profile", str(path), "--html", str(html), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    data = json.loads(js.read_text())
    assert data["totals"]["cycles"] == sum(k["cycles"] for k in data["kernels"]) > 0
    assert f"{data['totals']['cycles']}" in out
    root = ET.fromstring(html.read_text(encoding="utf-8"))  # well-formed XHTML
    rows = root.findall(".//h:table[@class='kernels']/h:tbody/h:tr", NS)
    assert [r.findall("h:td", NS)[1].text for r in rows] == [k["kernel"] for k in
                                                              data["kernels"]]
    charts = root.findall(".//s:svg", NS)
    assert len(charts) == 2  # per-kernel bars and the roofline
    timed = [k for k in data["kernels"] if k["cycles"]]  # NPU kernels and host fallbacks
    assert len(charts[0].findall("s:rect", NS)) == len(timed)
    on_roofline = [k for k in timed if k["unit"] == "npu" and k["macs_useful"]]
    assert len(charts[1].findall("s:circle", NS)) == len(on_roofline) > 0
    assert "<script" not in html.read_text()  # opens without a server or scripts


def test_fast_profile_times_every_kernel(cnn_int8, tmp_path):
    path, x = cnn_int8
    profile = lepton_runtime.load(path, mode="fast").profile(x)
    assert all(k.time_ms > 0 for k in profile.kernels) and profile.total_cycles == 0
    html = tmp_path / "fast.html"
    assert main(["profile", str(path), "--mode", "fast", "--html", str(html)]) == 0
    root = ET.fromstring(html.read_text(encoding="utf-8"))
    assert len(root.findall(".//s:svg", NS)) == 1  # no roofline without sim cycles
    assert "sim mode" in html.read_text()


def test_profile_of_a_missing_artifact_is_a_clear_error(tmp_path, capsys):
    assert main(["profile", str(tmp_path / "none.lepton")]) == 1
    assert "none.lepton" in capsys.readouterr().err
