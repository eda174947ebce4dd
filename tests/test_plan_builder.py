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


def test_every_call_is_proved_to_match_its_kernel_buffers():
    """check_signatures: the plan hands each kernel the buffers it was compiled for; a
    tensor of another size or dtype is a CompileError at build time."""
    import copy

    from lepton_compiler import pipeline
    from lepton_compiler.errors import CompileError
    from lepton_compiler.lower import lowering, plan_builder
    from lepton_compiler.options import BuildOptions

    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    mod = pipeline.front(model, (torch.randn(2, 8),), BuildOptions.create(),
                         pipeline.Run(verify=False)).mod
    mod = lowering.fuse(mod)
    built = plan_builder.build_plan(mod["main"], ["x"], ["y"])
    kernels = lowering.kernels_of(mod)
    plan_builder.check_signatures(built.plan, kernels)  # the real plan holds
    for field, value in (("shape", [3, 8]), ("dtype", "float64")):
        bad = copy.deepcopy(built.plan)
        bad["tensors"][bad["calls"][0]["args"][0]][field] = value
        with pytest.raises(CompileError, match="this is a compiler bug"):
            plan_builder.check_signatures(bad, kernels)
    bad = copy.deepcopy(built.plan)
    bad["calls"][0]["args"].pop()
    with pytest.raises(CompileError, match="passes"):
        plan_builder.check_signatures(bad, kernels)
