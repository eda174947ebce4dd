"""Placement and partitioning: where every layer runs and why, on real networks; the
pre-flight check; the generated operator documentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import lepton_compiler as lc
import lepton_runtime
from lepton_compiler.passes import supported_ops
from lepton_compiler.reports.placement import COLORS

from .conftest import to_onnx_bytes

DOCS = Path(__file__).resolve().parents[1] / "docs" / "SUPPORTED_OPS.md"


def _calibration(shape, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape).astype(np.float32),) for _ in range(n)]


def test_supported_ops_doc_is_generated_and_up_to_date():
    text = supported_ops.markdown()
    assert DOCS.read_text() == text, (
        "docs/SUPPORTED_OPS.md is stale: run "
        "`python -m lepton_compiler.passes.supported_ops > docs/SUPPORTED_OPS.md`")
    from lepton_compiler.target.npu_constraints import RULES

    for rule in RULES:
        assert rule.__name__ in text and len(rule.__doc__.split()) >= 8


def test_resnet18_int8_puts_the_macs_on_the_npu_and_fuses(tmp_path):
    model = lc.zoo.resnet18()
    calib = _calibration((1, 3, 224, 224), n=1)
    compiled = lc.build(model, calib[0], target="lepton",
                        quantize=lc.QuantConfig(calibration_data=calib))
    report = compiled.report
    summary = report.summary()
    assert summary["npu_mac_share"] >= 0.95
    assert summary["kernels_after_fusion"] * 2 <= summary["relax_ops_before_fusion"]
    convs = [o for o in report.ops if o.kind == "conv2d"]
    assert len(convs) == 20 and all(o.unit == "npu" for o in convs)
    assert all("requantize" in o.fused for o in convs)
    for o in report.fallbacks():  # every host layer says why and what it costs
        assert o.reason and o.layer in o.reason and o.host_ms_estimate >= 0
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    assert np.array_equal(compiled(x), compiled.quantization.reference(x))
    # The report travels in the artifact: `lepton inspect --ops` reads it back.
    path = compiled.export(tmp_path / "r18.lepton")
    raw = lepton_runtime.inspect(path)["manifest"]["report"]
    again = lc.PlacementReport.from_dict(raw)
    assert again.summary() == report.summary()


def test_mobilenet_v2_int8_runs_every_layer_on_the_npu(tmp_path):
    model = lc.zoo.mobilenet_v2(width=0.5, num_classes=10)
    shape = (1, 3, 64, 64)
    compiled = lc.build(model, _calibration(shape)[0], target="lepton",
                        quantize=lc.QuantConfig(calibration_data=_calibration(shape)))
    convs = [o for o in compiled.report.ops if o.kind == "conv2d"]
    assert len(convs) == 52 and all(o.unit == "npu" and o.dtype == "int8" for o in convs)
    # the 17 depthwise convolutions, residual adds and the global mean on the vector unit
    for kind, count in (("add", 10), ("mean", 1)):
        layers = [o for o in compiled.report.ops if o.kind == kind]
        assert len(layers) == count and all(o.unit == "npu" for o in layers), kind
    assert compiled.report.npu_mac_share == 1.0
    host = compiled.report.fallbacks()  # only the float input's layout change
    assert all(o.dtype != "int8" for o in host), [o.layer for o in host]
    assert not compiled.build_info["quantization"]["float"]  # fully integer
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    assert np.array_equal(compiled(x), compiled.quantization.reference(x))
    sim = lepton_runtime.load(compiled.export(tmp_path / "m.lepton"), mode="sim")
    assert np.array_equal(sim.run(x), compiled.quantization.reference(x))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = compiled(x)
    cosine = got.ravel() @ expected.ravel() / np.linalg.norm(got) / np.linalg.norm(expected)
    assert cosine > 0.99


def test_transformer_block_int8_places_its_matmuls_on_the_npu():
    model = lc.zoo.transformer_block()
    shape = (2, 16, 64)
    compiled = lc.build(model, _calibration(shape)[0], target="lepton",
                        quantize=lc.QuantConfig(calibration_data=_calibration(shape)))
    ops = {o.layer: o for o in compiled.report.ops}
    dense = [o for o in ops.values() if o.kind == "dense"]
    assert len(dense) >= 3 and all(o.unit == "npu" for o in dense)
    scores = [o for o in ops.values() if o.kind == "matmul"]  # q k^T and p v
    assert len(scores) == 2 and all(o.unit == "npu" and o.dtype == "int8" for o in scores)
    # layer norms and the GELU run in integers on the vector unit
    for kind in ("layer_norm", "lut"):
        found = [o for o in ops.values() if o.kind == kind]
        assert found and all(o.unit == "npu" and o.dtype == "int8" for o in found), kind
    # torch's attention masks its scores with where(): that softmax stays float, and says why
    softmax = [o for o in ops.values() if o.layer.startswith("softmax")]
    assert softmax and all(o.unit == "host" and o.reason for o in softmax)


def test_float_model_on_lepton_explains_every_fallback():
    model = lc.zoo.small_cnn()
    compiled = lc.build(model, (np.zeros((1, 3, 16, 16), np.float32),), target="lepton")
    report = compiled.report
    assert report.npu_mac_share == 0.0
    conv = next(o for o in report.ops if o.kind == "conv2d")
    assert conv.unit == "host" and "quantize the model" in conv.reason
    assert conv.boundary_bytes == 0  # nothing on the NPU, nothing crosses


def test_check_lists_every_unsupported_and_fallback_op_in_one_call():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("LpNormalization", ["x"], ["c1"], name="lpn_a"),
             helper.make_node("Dropout", ["c1", "ratio", "training"], ["c2"], name="drop"),
             helper.make_node("Det", ["c2"], ["y"], name="det_0")]
    constants = [helper.make_tensor("ratio", TensorProto.FLOAT, [], [0.5]),
                 helper.make_tensor("training", TensorProto.BOOL, [], [True])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], constants),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    report = lc.check(model)
    assert report.unsupported == {"LpNormalization": ["lpn_a"], "Det": ["det_0"],
                                  "Dropout": ["drop"]}
    assert set(report.unsupported_reasons) == {"Dropout"}  # supported, but not in training
    table = report.table()
    assert "lpn_a" in table and "unsupported Dropout: drop (training-mode Dropout" in table

    block = lc.zoo.transformer_block()
    report = lc.check(to_onnx_bytes(block, (torch.zeros(1, 16, 64),)))
    fallbacks = {o.layer: o.reason for o in report.fallbacks()}
    assert any(k.startswith("erf") for k in fallbacks)  # GELU exported as an erf chain
    assert all(reason for reason in fallbacks.values())
    assert report.kernels_after_fusion is None and report.relax_ops_before_fusion > 0
    npu = {o.kind for o in report.ops if o.unit == "npu"}
    assert {"dense", "matmul", "layer_norm", "softmax"} <= npu


def test_report_exports_json_dot_and_svg(tmp_path):
    import xml.etree.ElementTree as ET

    report = lc.check(lc.zoo.digits_cnn(), (np.zeros((2, 1, 8, 8), np.float32),))
    data = json.loads(report.to_json())
    assert data["summary"]["npu_mac_share"] == pytest.approx(1.0)
    assert [o["layer"] for o in data["ops"]][:2] == ["permute_dims_0", "conv2d_0"]
    dot = report.to_dot()
    assert dot.startswith("digraph") and '"conv2d_0" -> "conv2d_1"' in dot
    assert COLORS["npu"] in dot and COLORS["host"] in dot
    root = ET.fromstring(report.to_svg())  # well-formed XML
    assert root.tag.endswith("svg") and len(root.findall("{*}rect")) == len(report.ops)


def test_cli_check_and_inspect_ops(tmp_path):
    import subprocess
    import sys

    model = lc.zoo.mlp(in_features=16)
    path = tmp_path / "mlp.onnx"
    path.write_bytes(to_onnx_bytes(model, (torch.zeros(3, 16),)))
    lepton = str(Path(sys.executable).parent / "lepton")
    result = subprocess.run([lepton, "check", str(path), "--json", str(tmp_path / "c.json"),
                             "--svg", str(tmp_path / "c.svg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "dense_0" in result.stdout and "npu" in result.stdout
    assert json.loads((tmp_path / "c.json").read_text())["summary"]["npu_layers"] == 3
    np.savez(tmp_path / "calib.npz", np.random.default_rng(0).standard_normal(
        (4, 3, 16)).astype(np.float32))
    out = tmp_path / "m.lepton"
    result = subprocess.run([lepton, "compile", str(path), "-o", str(out), "--target", "lepton",
                             "--quantize", "int8", "--calib", str(tmp_path / "calib.npz")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([lepton, "inspect", str(out), "--ops", "--dot",
                             str(tmp_path / "g.dot")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "100.0% of" in result.stdout and (tmp_path / "g.dot").read_text().startswith("digraph")


def test_partition_legality_is_checked_with_networkx():
    from lepton_compiler.passes.qgraph import check_partition, partition_cycle, read_graph

    # a -> b -> c with a and c in one kernel and b outside: not convex, a cycle.
    edges = [("a", "b"), ("b", "c")]
    assert partition_cycle(edges, {"a": "G", "b": "H", "c": "G"}) in (["G", "H"], ["H", "G"])
    assert partition_cycle(edges, {"a": "G", "b": "G", "c": "H"}) is None
    # The groups built for real networks are legal.
    from lepton_compiler.options import BuildOptions
    from lepton_compiler.pipeline import Run, front

    for model, shape in ((lc.zoo.small_cnn(), (1, 3, 16, 16)),
                         (lc.zoo.transformer_block(), (1, 16, 64))):
        mod = front(model, (np.zeros(shape, np.float32),), BuildOptions(), Run()).mod
        check_partition(read_graph(mod["main"]))
