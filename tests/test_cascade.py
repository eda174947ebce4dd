"""Cascading: an activation kept in SRAM between two NPU layers is bit-identical to the
uncascaded build and moves fewer DRAM bytes; the reports list the cascades; a plan whose
residency marks are wrong is refused on load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lepton_compiler as lc
import lepton_runtime
from lepton_runtime import format as fmt
from lepton_runtime.errors import ArtifactError

from .test_runtime import _members, _with_plan, _write


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two pointwise convs and a 3x3 conv, built with and without cascading."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(16, 32, 1), torch.nn.ReLU(), torch.nn.Conv2d(32, 16, 1),
        torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1)).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 20, 20)).astype(np.float32)
    calib = [(rng.standard_normal(x.shape).astype(np.float32),) for _ in range(4)]
    root = tmp_path_factory.mktemp("cascade")
    built = {}
    for cascade in (True, False):
        compiled = lc.build(model, (x,), target="lepton", cascade=cascade,
                            quantize=lc.QuantConfig(calibration_data=calib))
        built[cascade] = (compiled, compiled.export(root / f"m_{cascade}.lepton"))
    return built, x


def test_a_cascaded_pair_is_bit_exact_and_moves_fewer_dram_bytes(pair):
    built, x = pair
    cascaded, plain = built[True][0], built[False][0]
    pairs = [(c["producer"], c["consumer"]) for c in cascaded.report.cascades]
    assert pairs == [("conv2d_0", "conv2d_1"), ("conv2d_1", "conv2d_2")]
    assert plain.report.cascades == [] and "cascade conv2d_0 -> conv2d_1" in str(
        cascaded.report)
    kept = {c["producer"]: c["bytes"] for c in cascaded.report.cascades}
    assert kept == {"conv2d_0": 20 * 20 * 32, "conv2d_1": 20 * 20 * 16}
    profiles = {}
    for cascade, (_, artifact) in built.items():
        for mode in ("fast", "sim"):
            out = lepton_runtime.load(artifact, mode=mode).run(x)
            assert np.array_equal(out, plain.quantization.reference(x)), (cascade, mode)
        profiles[cascade] = lepton_runtime.load(artifact, mode="sim").profile(x)
    dram = {c: p.total_dram_bytes for c, p in profiles.items()}
    onchip = {c: p.total_onchip_bytes for c, p in profiles.items()}  # also line buffers
    saved = onchip[True] - onchip[False]
    assert dram[True] < dram[False] and dram[False] - dram[True] == saved
    # each kept tensor is neither stored by its producer nor loaded by its consumer (the 3x3
    # conv loads its input rows into its line buffer: from SRAM when cascaded)
    assert saved == 2 * (kept["conv2d_0"] + kept["conv2d_1"])
    assert profiles[True].total_cycles <= profiles[False].total_cycles


def test_a_resident_mark_on_a_weight_is_refused(pair, tmp_path):
    _, path = pair[0][True]
    members = _members(path)
    plan = json.loads(members[fmt.PLAN])
    call = next(c for c in plan["calls"] if c.get("resident"))
    weight = next(t for t in call["args"] if plan["tensors"][t]["kind"] == "weight")
    call["resident"] = [weight]
    with pytest.raises(ArtifactError, match="resident tensor must be one of its arena"):
        lepton_runtime.load(_write(tmp_path / "bad.lepton", _with_plan(members, plan)))


def test_the_npu_library_refuses_a_bad_residency_range(pair):
    _, path = pair[0][True]
    session = lepton_runtime.load(path, mode="sim")
    resident = session._npu["resident"]
    with pytest.raises(ValueError, match="lepton_npu_resident: bad range"):
        resident(0, 64)  # no address
    assert resident(0, -1) == 0  # clearing always works
