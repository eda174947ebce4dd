"""Every registered int8 layer kind, bit-exact against its own numpy reference.

Small models exercise each kind on the Lepton target, fused and unfused; the compiled int8
outputs must equal the integer reference bit for bit, and the models together must cover
every kind in the registry (a new kind without a model here fails the coverage test).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lepton_compiler as lc
from lepton_compiler.passes.layers import REGISTRY, candidates, compute_kinds, kind_of
from lepton_compiler.passes.layers.base import LayerKind


class _Convs(nn.Module):
    """conv2d (with ReLU6), depthwise conv2d, max/avg pooling, ReLU, clip, mean, reshape."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)

    def forward(self, x):
        y = torch.clamp(self.conv(x), 0.0, 6.0)
        y = torch.relu(self.pool(self.dw(y)))  # a ReLU not fused into a GEMM
        y = torch.clamp(self.avg(y), -0.5, 4.0)
        return y.mean(dim=(2, 3)).reshape(y.shape[0], 16)


class _Attention(nn.Module):
    """dense, activation x activation matmul (with ReLU), residual add, permute_dims."""

    def __init__(self):
        super().__init__()
        self.q, self.k = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x):
        q, k = self.q(x), self.k(x)
        scores = torch.relu(torch.matmul(q, k.transpose(1, 2)))
        return torch.matmul(scores, x) + x


class _Layout(nn.Module):
    """pad (TF-style "same", asymmetric, between a conv and the ReLU6 before the next conv: a
    zero pad right before a conv would fold into the conv's padding), concat of two inputs in
    different quantizations, strided_slice."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2)
        self.c = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        with torch.no_grad():
            self.c.weight.mul_(3.0)  # another range: concat rescales it

    def forward(self, x):
        y = self.b(torch.clamp(F.pad(self.a(x), (0, 1, 0, 1)), 0.0, 6.0))
        z = torch.cat([y, self.c(x)], dim=1)
        return z[:, 2:10, 1:3, :]


class _Transformer(nn.Module):
    """layer norm, scaled scores (scale: no kernel), softmax, GELU (a table)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.q, self.k = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x):
        h = self.norm(x)
        scores = torch.matmul(self.q(h), self.k(h).transpose(1, 2)) * 0.25
        return F.gelu(torch.matmul(torch.softmax(scores, dim=-1), h) + x)


MODELS = {"convs": (_Convs, (2, 3, 8, 8)), "attention": (_Attention, (2, 8, 16)),
          "layout": (_Layout, (2, 3, 8, 8)), "transformer": (_Transformer, (2, 8, 16))}


def _build(name: str, fuse: bool):
    cls, shape = MODELS[name]
    torch.manual_seed(0)
    model = cls().eval()
    rng = np.random.default_rng(1)
    calib = [(rng.standard_normal(shape).astype(np.float32),) for _ in range(4)]
    compiled = lc.build(model, calib[0], target="lepton",
                        quantize=lc.QuantConfig(calibration_data=calib), fuse=fuse)
    return compiled, rng.standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(MODELS))
def fused(request):
    return _build(request.param, fuse=True)


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_kinds_are_bit_exact_with_their_reference(name, fuse):
    compiled, x = _build(name, fuse)
    assert np.array_equal(compiled(x), compiled.quantization.reference(x))


def test_every_registered_kind_is_exercised():
    covered = set()
    for name in MODELS:
        compiled, _ = _build(name, fuse=True)
        graph = compiled.quantization.graph
        covered |= {lay.kind for lay in graph.graph.layers if lay.name in graph.quantized}
    assert covered == set(REGISTRY), f"kinds without a model here: {set(REGISTRY) - covered}"


def test_each_kind_declares_its_pattern_and_documentation():
    for kind in REGISTRY.values():
        assert isinstance(kind, LayerKind) and kind.ops and all(op.startswith("relax.")
                                                                for op in kind.ops)
        assert kind.pattern and kind.int8_kernel and kind.runs_on
        assert kind_of(kind.name) is kind and kind in candidates(kind.ops[0])
    assert candidates("relax.matmul")[0].name == "dense"  # a constant weight wins
    assert set(compute_kinds()) == {"conv2d", "dense", "matmul", "add", "concat", "mean",
                                    "layer_norm", "lut"}
    assert kind_of("float") is None and candidates("relax.nn.log_softmax") == []


def test_typed_parameters_are_frozen_dataclasses(fused):
    import dataclasses

    compiled, _ = fused
    qg = compiled.quantization.graph
    for layer in qg.graph.layers:
        params = qg.params.get(layer.name)
        if params is None:
            continue
        assert dataclasses.is_dataclass(params)
        field = dataclasses.fields(params)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(params, field, 0)


def test_pad_concat_and_slice_run_in_int8_within_a_step_or_two_of_float():
    compiled, x = _build("layout", fuse=True)
    qg = compiled.quantization.graph
    kinds = {lay.kind: lay for lay in qg.graph.layers if lay.name in qg.quantized}
    assert {"pad", "concat", "strided_slice"} <= set(kinds)
    assert [lay.kind for lay in qg.graph.layers if lay.name not in qg.quantized] == \
        ["permute_dims"] * 2  # the float input, once per conv that reads it: no islands
    pad = qg.params[kinds["pad"].name]
    assert pad.value == qg.tensors[kinds["pad"].inputs[0]].zero_point  # zero pads with zp
    assert sum(r is not None for r in qg.params[kinds["concat"].name].rescale) == 1
    cls, _ = MODELS["layout"]
    torch.manual_seed(0)
    want = cls().eval()(torch.from_numpy(x)).detach().numpy()
    step = qg.tensors[qg.graph.outputs[0]].scale
    assert np.abs(compiled(x) - want).max() <= 2 * step
