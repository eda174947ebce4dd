"""Fusion changes kernels, never results: every int8 composite (conv/matmul + bias +
requantize + ReLU/ReLU6, residual add + ReLU) equals the chain of single-op kernels bit for
bit, and float fusion equals unfused execution to rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lepton_compiler as lc


def _relu6_cnn():
    """conv + BN + ReLU6, a residual add + ReLU, a depthwise conv, and a linear head."""
    torch.manual_seed(0)
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16),
                                   nn.ReLU6())
            self.b = nn.Conv2d(16, 16, 3, padding=1)
            self.c = nn.Conv2d(16, 16, 1)
            self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.fc = nn.Linear(16 * 8 * 8, 10)

        def forward(self, x):
            h = self.b(self.a(x))
            h = torch.relu(h + self.c(h))
            return self.fc(torch.flatten(self.dw(h), 1))

    return Net().eval()


MODELS = {
    "digits_cnn": (lambda: lc.zoo.digits_cnn(), (4, 1, 8, 8)),
    "relu6_cnn": (_relu6_cnn, (2, 3, 8, 8)),
    "linear_block": (lambda: lc.zoo.linear_block(), (2, 8, 64)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_int8_composites_equal_the_unfused_chain_bit_for_bit(name):
    make, shape = MODELS[name]
    model = make()
    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal(shape).astype(np.float32),) for _ in range(3)]
    fused = lc.build(model, calib[0], target="lepton",
                     quantize=lc.QuantConfig(calibration_data=calib))
    table = fused.quantization.table
    unfused = lc.build(model, calib[0], quantize=lc.QuantConfig(table=table), fuse=False)
    assert unfused.build_info["calls"] > fused.build_info["calls"]
    assert fused.build_info["npu_kernels"]
    fused_ops = {op for o in fused.report.ops for op in o.fused}
    assert {"bias add", "requantize"} <= fused_ops
    if name == "relu6_cnn":
        assert "relu6" in fused_ops and "nn.relu" in fused_ops
    for scale in (0.5, 1.0, 4.0):  # 4x: saturating clamps everywhere
        x = rng.standard_normal(shape).astype(np.float32) * scale
        assert np.array_equal(fused(x), unfused(x))
        assert np.array_equal(fused(x), fused.quantization.reference(x))


@pytest.mark.parametrize("name, shape", [("small_cnn", (2, 3, 16, 16)),
                                         ("transformer_block", (2, 16, 64))])
def test_float_fusion_matches_unfused_execution(name, shape):
    model = getattr(lc.zoo, name)()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    fused = lc.build(model, (x,))
    unfused = lc.build(model, (x,), fuse=False)
    assert unfused.build_info["calls"] > fused.build_info["calls"]
    a, b = fused(x), unfused(x)
    assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, float(np.max(np.abs(b))))
