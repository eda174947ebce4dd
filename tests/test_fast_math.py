"""GELU, softmax and exp legalized as vectorisable polynomials (``lower.fast_math``): within
float32 rounding of PyTorch, with the exact functions' NaN, infinity, overflow and underflow
behaviour, and row reductions (softmax, layer norm) scheduled as vector partial sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lepton_compiler as lc

EDGES = np.array([np.nan, np.inf, -np.inf, 100.0, -120.0, 88.5, -103.0, 0.0, -0.0, 1e-30],
                 np.float32)


class _Ops(torch.nn.Module):
    def forward(self, x):
        return (torch.nn.functional.gelu(x), torch.softmax(x, dim=-1), torch.exp(x),
                torch.nn.functional.layer_norm(x, x.shape[-1:]))


@pytest.fixture(scope="module")
def compiled():
    x = np.zeros((3, 160), np.float32)
    return lc.build(_Ops().eval(), (x,), target="host")


def _inputs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((3, 160)) * 6).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_polynomials_match_pytorch(compiled, seed):
    x = _inputs(seed)
    got = compiled(x)
    with torch.no_grad():
        want = [t.numpy() for t in _Ops()(torch.from_numpy(x))]
    for name, g, w in zip(("gelu", "softmax", "exp", "layer_norm"), got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6, err_msg=name)


def _gelu_exact(v: float) -> float:  # x * (1/2 + erf(x / sqrt 2) / 2), as TVM defines it
    return v * (0.5 + math.erf(v / math.sqrt(2.0)) * 0.5)


def test_edge_values_keep_the_exact_functions_answers(compiled):
    x = _inputs(2)
    x[0, :EDGES.size] = EDGES
    gelu, _, exp, _ = compiled(x)
    want_gelu = np.array([_gelu_exact(float(v)) for v in EDGES], np.float32)
    with np.errstate(over="ignore"):
        want_exp = np.exp(EDGES)
    for got, want in ((gelu[0, :EDGES.size], want_gelu), (exp[0, :EDGES.size], want_exp)):
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert np.array_equal(got[np.isinf(want)], want[np.isinf(want)])
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=2e-6, atol=1e-30)
