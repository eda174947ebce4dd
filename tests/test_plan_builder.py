"""Plans for graphs whose outputs are not plain kernel results, and non-float inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lepton_compiler


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


class SameOutputTwice(torch.nn.Module):
    def forward(self, x):
        y = x * 2
        return y, y


class UnusedInput(torch.nn.Module):
    def forward(self, x, z):
        return x + 1


class Embedding(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(50, 8)

    def forward(self, ids):
        return self.table(ids).mean(1)


class ReshapeOutput(torch.nn.Module):
    def forward(self, x):
        return (x + 1).reshape(-1)


CASES = {
    "identity": (Identity, lambda: (torch.randn(2, 3),)),
    "same_output_twice": (SameOutputTwice, lambda: (torch.randn(2, 3),)),
    "unused_input": (UnusedInput, lambda: (torch.randn(2, 3), torch.randn(4))),
    "int64_embedding": (Embedding, lambda: (torch.randint(0, 50, (2, 5)),)),
    "reshape_output": (ReshapeOutput, lambda: (torch.randn(2, 3),)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_edge_case_graphs(name):
    torch.manual_seed(0)
    make_model, make_inputs = CASES[name]
    model = make_model().eval()
    inputs = make_inputs()
    compiled = lepton_compiler.build(model, inputs)
    got = compiled(*inputs)
    with torch.no_grad():
        expected = model(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-6, atol=1e-6)
    if name == "same_output_twice":
        assert got[0] is not got[1]  # each output is its own array
    if name == "identity":
        assert not np.shares_memory(got[0], inputs[0].numpy())
