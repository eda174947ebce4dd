"""CrossLayerEqualization: the float function is unchanged, per-channel ranges end equal,
per-tensor int8 gets more accurate, and ReLU6 pairs are left alone."""

from __future__ import annotations

import numpy as np
import torch

import lepton_compiler as lc
from lepton_compiler import pipeline
from lepton_compiler.options import BuildOptions
from lepton_compiler.passes.equalize import CrossLayerEqualization
from lepton_compiler.passes.qgraph import read_graph


class _Imbalanced(torch.nn.Module):
    """conv -> ReLU -> depthwise conv -> conv, the first conv's channels 100x apart."""

    def __init__(self, act=torch.relu):
        super().__init__()
        self.act = act
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.b = torch.nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            spread = torch.logspace(-1, 1, 8)
            self.a.weight.mul_(spread[:, None, None, None])
            self.a.bias.mul_(spread)
            self.dw.weight.div_(spread[:, None, None, None])

    def forward(self, x):
        return self.b(self.act(self.dw(self.act(self.a(x)))))


def _front(model, x):
    options = BuildOptions.create(target="lepton")
    _, host = pipeline.resolve_targets(options)
    head = pipeline.front(model, (x,), options, pipeline.Run(verify=False))
    return head.mod, host


def test_equalization_keeps_the_function_and_balances_the_ranges():
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    mod, host = _front(_Imbalanced().eval(), x)
    after = CrossLayerEqualization()(mod)
    assert after["main"].attrs["lepton.equalized"] == "conv2d_0>conv2d_1,conv2d_1>conv2d_2"
    run = pipeline.host_executor(host, "test")
    name = read_graph(mod["main"]).inputs[0]
    before_out = run(mod, [name], ["y"])(x)
    after_out = run(after, [name], ["y"])(x)
    np.testing.assert_allclose(after_out, before_out, rtol=1e-4, atol=1e-5)
    graph = read_graph(after["main"])
    a, dw = graph.layer("conv2d_0").weight, graph.layer("conv2d_1").weight
    r1 = np.abs(a).reshape(-1, 8).max(axis=0)
    r2 = np.abs(dw).reshape(-1, 8).max(axis=0)
    np.testing.assert_allclose(r1, r2, rtol=1e-2)  # equal ranges per channel (iterated)


def test_equalization_makes_per_tensor_int8_more_accurate():
    torch.manual_seed(1)
    model = _Imbalanced().eval()
    rng = np.random.default_rng(1)
    calib = [(rng.standard_normal((2, 3, 8, 8)).astype(np.float32),) for _ in range(4)]
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = model(torch.from_numpy(x)).detach().numpy()
    errors = {}
    for equalize in (False, True):
        config = lc.QuantConfig(calibration_data=calib, per_channel=False, equalize=equalize)
        compiled = lc.build(model, (x,), target="lepton", quantize=config)
        assert np.array_equal(compiled(x), compiled.quantization.reference(x))
        errors[equalize] = float(np.sqrt(np.mean((compiled(x) - want) ** 2)))
    assert errors[True] < errors[False] / 2, errors


def test_relu6_pairs_are_not_equalized():
    torch.manual_seed(2)
    x = np.zeros((1, 3, 8, 8), np.float32)
    mod, _ = _front(_Imbalanced(lambda t: torch.clamp(t, 0, 6)).eval(), x)
    after = CrossLayerEqualization()(mod)
    assert after.same_as(mod) or "lepton.equalized" not in (after["main"].attrs or {})
    assert CrossLayerEqualization().info.name == "lepton.CrossLayerEqualization"
