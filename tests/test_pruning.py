"""Structured pruning through the public API and the CLI: ResNet-18 at 0.5, options, errors.

The exactness law over random topologies lives in tests/passes/test_prune_channels.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lepton_compiler import OptionError, PruneConfig, PruneError, QuantConfig, build, prune
from lepton_compiler.cli import main
from lepton_compiler.examples import zoo

from .conftest import to_onnx_bytes


def test_resnet18_half_pruned_removes_half_the_macs_and_runs_float_and_int8():
    model = zoo.resnet18(num_classes=10)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    result = prune(model, (x,), PruneConfig(ratio=0.5))
    report = result.report
    assert report.macs_after <= 0.5 * report.macs_before  # >= 50% fewer MACs
    assert report.params_after < 0.5 * report.params_before
    for g in report.groups:
        if g.pinned:
            assert g.channels_after == g.channels_before
        else:
            assert g.channels_after % 16 == 0 and g.channels_after == g.channels_before // 2
    # residual stages are single groups: stem + layer1 (3 producers), each later stage's
    # first conv, downsample and second convs (3 + 1 producers share it)
    sizes = sorted(len(g.layers) for g in report.groups)
    assert sizes.count(3) == 4
    fp32 = build(model, (x,), prune=0.5)
    assert fp32.build_info["pruning"]["mac_reduction"] >= 0.5
    calib = [(rng.standard_normal(x.shape).astype(np.float32),) for _ in range(2)]
    int8 = build(model, (x,), target="lepton", prune=0.5,
                 quantize=QuantConfig(calibration_data=calib))
    assert int8.build_info["npu_kernels"]
    a, b = fp32(x), int8(x)
    assert a.shape == b.shape == (1, 10) and np.all(np.isfinite(a))
    cosine = float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine > 0.99


def test_skip_and_per_layer_ratios():
    x = np.zeros((1, 3, 16, 16), np.float32)
    model = zoo.small_cnn(width=64)
    report = prune(model, (x,), PruneConfig(ratio=0.5, per_layer={"conv2d_1": 0.75})).report
    groups = {g.name: g for g in report.groups}
    assert groups["conv2d_0"].channels_after == 32 and groups["conv2d_1"].channels_after == 16
    report = prune(model, (x,), PruneConfig(ratio=0.5, skip=["conv2d_2"])).report
    groups = {g.name: g for g in report.groups}
    assert groups["conv2d_0"].channels_after == 64 and groups["conv2d_0"].pinned == "skipped"
    assert "conv2d_0" in report.table() and "MACs -" in report.table()


def test_alignment_rounds_to_the_tile_and_never_below_it():
    x = np.zeros((1, 3, 16, 16), np.float32)
    report = prune(zoo.small_cnn(width=48), (x,), PruneConfig(ratio=0.9)).report
    groups = {g.name: g for g in report.groups}
    assert groups["conv2d_0"].channels_after == 16  # 4.8 rounds to 0 tiles; one is kept
    report = prune(zoo.small_cnn(width=8), (x,), PruneConfig(ratio=0.5)).report
    assert all(g.channels_after == g.channels_before == 8 or g.pinned
               for g in report.groups)  # fewer channels than a tile: left whole


@pytest.mark.parametrize(("config", "error", "match"), [
    (PruneConfig(ratio=1.0), OptionError, r"ratio must be in \[0, 1\)"),
    (PruneConfig(ratio=-0.1), OptionError, r"ratio must be in \[0, 1\)"),
    (PruneConfig(per_layer={"conv2d_0": 2}), OptionError, r"per_layer\['conv2d_0'\]"),
    (PruneConfig(criterion="taylor"), OptionError, "unknown pruning criterion 'taylor'"),
    (PruneConfig(align=0), OptionError, "align must be a positive integer"),
    (PruneConfig(skip=["conv9"]), PruneError, "conv9 match no layer; the layers are conv2d_0"),
    (PruneConfig(per_layer={"fc": 0.5}), PruneError, "fc match no layer"),
    ("half", OptionError, "prune= takes a PruneConfig or a ratio"),
])
def test_bad_configs_are_refused(config, error, match):
    with pytest.raises(error, match=match):
        prune(zoo.small_cnn(), (np.zeros((1, 3, 16, 16), np.float32),), config)


def test_a_model_with_nothing_prunable_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()  # its output is the model's
    with pytest.raises(PruneError, match="nothing to prune"):
        prune(model, (np.zeros((2, 8), np.float32),), 0.5)


def test_cli_compile_prune(tmp_path, capsys):
    torch.manual_seed(0)
    model = zoo.mlp(16, 64, 4, depth=3)
    x = torch.randn(2, 16)
    onnx_path = tmp_path / "mlp.onnx"
    onnx_path.write_bytes(to_onnx_bytes(model, (x,)))
    out = tmp_path / "mlp.lepton"
    assert main(["compile", str(onnx_path), "-o", str(out), "--prune", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "pruning:" in text and "64 -> 32" in text
    assert main(["compile", str(onnx_path), "-o", str(out), "--prune", "1.5"]) == 1
    assert "ratio must be in [0, 1)" in capsys.readouterr().err
