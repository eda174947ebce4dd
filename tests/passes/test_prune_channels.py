"""PruneChannels: dependency groups, physical removal and the masking law.

The law: a pruned graph computes exactly what the original computes with the pruned channels
zeroed where they are read. A wrong dependency group (a residual tie or a concat offset
missed) breaks it, so random residual/concat topologies are checked with hypothesis.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lepton_compiler import frontend
from lepton_compiler.examples import zoo
from lepton_compiler.lower import lowering
from lepton_compiler.optimize.pruning import PruneConfig, prune_module
from lepton_compiler.passes.prune_channels import analyze, mask

from .relax_eval import evaluate

nn = torch.nn


def _run(mod, x: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    ex = tvm.compile(mod, target="llvm")
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
    while not hasattr(out, "numpy"):
        out = out[0]
    return out.numpy()


def _imported(model, x):
    return lowering.fold_constants(frontend.import_model(model, (x,)).mod)


def _check_law(model, x, config, align, run=_run):
    import tvm

    mod = _imported(model, x)
    result = prune_module(mod, config, align)
    masked = tvm.IRModule({"main": mask(mod["main"], analyze(mod["main"]), result.kept)})
    pruned, reference = run(result.module, x), run(masked, x)
    np.testing.assert_allclose(pruned, reference, rtol=1e-5, atol=1e-5)
    return result, mod


def _evaluate(mod, x):
    return evaluate(mod["main"], x)


def test_small_cnn_residual_tie_and_flatten_blocks():
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    model = zoo.small_cnn(width=32)
    result, mod = _check_law(model, x, PruneConfig(ratio=0.5), align=8)  # compiled by TVM
    groups = {g.name: g for g in result.report.groups}
    # conv2d_0 (through max-pool) and conv2d_2 meet in the residual add: one group.
    assert groups["conv2d_0"].layers == ["conv2d_0", "conv2d_2"]
    assert groups["conv2d_0"].channels_after == 16 and groups["conv2d_1"].channels_after == 16
    assert groups["dense_0"].pinned.startswith("pinned: it is a model output")
    assert result.report.macs_after < result.report.macs_before
    # Masking changes the answer (the law is not vacuous) and the pruned graph is smaller.
    unmasked = evaluate(mod["main"], x)
    masked = evaluate(mask(mod["main"], analyze(mod["main"]), result.kept), x)
    assert not np.allclose(unmasked, masked, atol=1e-3)


class Net(nn.Module):
    """A random residual/concat/depthwise topology from a list of block kinds."""

    def __init__(self, kinds: list[str], width: int, head: str, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.kinds, self.head = kinds, head
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU())
        blocks, c = [], width
        for kind in kinds:
            if kind == "residual":
                blocks.append(nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False),
                                            nn.BatchNorm2d(c), nn.ReLU(),
                                            nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)))
            elif kind == "concat":
                blocks.append(nn.ModuleList([nn.Conv2d(c, c, 1), nn.Conv2d(c, width, 3,
                                                                           padding=1)]))
                c = c + width
            elif kind == "depthwise":
                blocks.append(nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c),
                                            nn.BatchNorm2d(c), nn.ReLU6()))
            else:  # "conv": change the width
                blocks.append(nn.Sequential(nn.Conv2d(c, width * 2, 1), nn.ReLU()))
                c = width * 2
        self.blocks = nn.ModuleList(blocks)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
        self.fc = nn.Linear(c * (16 if head == "flatten" else 1), 5)

    def forward(self, x):
        x = self.stem(x)
        for kind, block in zip(self.kinds, self.blocks, strict=True):
            if kind == "residual":
                x = torch.relu(x + block(x))
            elif kind == "concat":
                x = torch.cat([block[0](x), block[1](x)], dim=1)
            else:
                x = block(x)
        x = nn.functional.avg_pool2d(x, 2)
        x = x.flatten(1) if self.head == "flatten" else x.mean((2, 3))
        return self.fc(x)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(kinds=st.lists(st.sampled_from(["residual", "concat", "depthwise", "conv"]),
                      min_size=1, max_size=3),
       width=st.sampled_from([8, 12, 16]), head=st.sampled_from(["flatten", "mean"]),
       ratio=st.floats(0.0, 0.9), align=st.sampled_from([1, 4, 8]),
       criterion=st.sampled_from(["l1", "l2"]), seed=st.integers(0, 2**16))
@example(kinds=["residual"], width=12, head="flatten", ratio=0.0, align=8, criterion="l1",
         seed=0)  # ratio 0 keeps a 12-channel group whole rather than rounding it to 8
@example(kinds=["residual"], width=12, head="flatten", ratio=5e-324, align=8, criterion="l1",
         seed=0)  # a tiny ratio rounds 12 up to 16 channels: capped, the group stays whole
def test_pruned_equals_masked_on_random_topologies(kinds, width, head, ratio, align,
                                                   criterion, seed):
    model = Net(kinds, width, head, seed).eval()
    x = np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)
    result, mod = _check_law(model, x, PruneConfig(ratio=ratio, criterion=criterion), align,
                             _evaluate)
    with torch.no_grad():  # the evaluator itself agrees with PyTorch on the original
        np.testing.assert_allclose(_evaluate(mod, x), model(torch.from_numpy(x)).numpy(),
                                   rtol=1e-4, atol=1e-5)
    for g in result.report.groups:
        if ratio == 0 or g.pinned:  # ratio 0 prunes nothing: no group is rounded down
            assert g.channels_after == g.channels_before
        elif g.channels_before > align:  # a multiple of align, or (rounded up past) all
            assert g.channels_after % align == 0 or g.channels_after == g.channels_before
            assert 0 < g.channels_after <= g.channels_before
