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
    # conv loads its input rows into its line buffer: from SRAM when cascaded); the 1x1 conv
    # loads whole row strips, padded rows too (400 rows in strips of 16 x m_block)
    plan = json.loads(_members(built[True][1])[fmt.PLAN])
    strips = 16 * next(c["plan"]["m_block"] for c in plan["calls"] if c.get("ops") == [
        "conv2d_1"])
    padding = (-(-400 // strips) * strips - 400) * 32
    assert saved == 2 * (kept["conv2d_0"] + kept["conv2d_1"]) + padding
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


@pytest.fixture(scope="module")
def tuned_chain(tmp_path_factory):
    """Three dense layers whose two 37 KB activations cannot both stay in the 64 KiB input
    SRAM, tuned over every plan and cascade choice with the sim runner."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 48), torch.nn.ReLU(), torch.nn.Linear(48, 48), torch.nn.ReLU(),
        torch.nn.Linear(48, 16)).eval()
    x = np.random.default_rng(0).standard_normal((784, 16)).astype(np.float32)
    config = lc.QuantConfig(calibration_data=[(x,)])
    work = tmp_path_factory.mktemp("tuned") / "db"
    session = lc.tune(model, (x,), quantize=config, work_dir=str(work), trials=1000)
    assert session.stopped == "every candidate measured"
    return model, x, config, work, session


def test_tuning_measures_each_cascade_choice_and_holding_never_costs_cycles(tuned_chain):
    from lepton_compiler.tuning.database import Database, knob_key

    _, _, _, work, session = tuned_chain
    db = Database(work)
    for task in session.tasks:
        plain = {knob_key(r["knobs"]): r["cost"] for r in db.measured_ok(task.workload)}
        m, n, k = (int(v) for v in task.workload.split("/")[1].split("x"))
        for resident in (["input"], ["output"], ["input", "output"]):
            held = db.measured_ok(task.workload, resident)
            nbytes = m * k * ("input" in resident) + m * n * ("output" in resident)
            # every choice that leaves the plans any room is measured
            assert bool(held) == (nbytes < 65536 - 1024), (task.workload, resident)
            for r in held:  # the same plan without the cascade: never fewer cycles
                same = {k: v for k, v in r["knobs"].items() if k != "resident"}
                assert r["cost"] <= plain[knob_key(same)], (task.workload, r)
            # a 37 KB activation leaves room for fewer plans
            assert len(held) <= len(plain)


def test_a_tuned_build_takes_the_cascades_and_plans_with_the_fewest_measured_cycles(
        tuned_chain, tmp_path):
    """The tuned build's NPU cycles equal the best combination of cascades and plans that a
    brute force over the tuning records finds, and beat the untuned (greedy) cascades."""
    from lepton_compiler.target.npu_schedule import plan_from_knobs, sram_needs
    from lepton_compiler.target.spec import load_spec
    from lepton_compiler.tuning.database import Database

    model, x, config, work, session = tuned_chain
    db, spec = Database(work), load_spec()
    workloads = [next(t.workload for t in session.tasks if f"784x{n}x{k}/" in t.workload)
                 for n, k in ((48, 16), (48, 48), (16, 48))]
    size = 784 * 48  # each hidden activation, int8

    def best(workload, resident, room):
        fits = [r["cost"] for r in db.measured_ok(workload, resident)
                if sram_needs(plan_from_knobs(*map(int, workload.split("/")[1].split("x")),
                                              spec, r["knobs"]), spec)["input"] <= room]
        return min(fits, default=None)

    totals = {}
    for links in ((), (0,), (1,), (0, 1)):  # which hidden activations stay in SRAM
        roles = [set() for _ in workloads]
        for i in links:
            roles[i].add("output")
            roles[i + 1].add("input")
        costs = [best(w, sorted(r), spec.sram.input_bytes - size * len(r))
                 for w, r in zip(workloads, roles, strict=True)]
        if None not in costs:
            totals[links] = sum(costs)
    assert (0, 1) not in totals  # both activations do not fit at once
    tuned = lc.build(model, (x,), target="lepton", quantize=config, tuning_db=str(work))
    plain = lc.build(model, (x,), target="lepton", quantize=config)
    cycles = {}
    for name, compiled in (("tuned", tuned), ("plain", plain)):
        path = compiled.export(tmp_path / f"{name}.lepton")
        for mode in ("fast", "sim"):
            out = lepton_runtime.load(path, mode=mode).run(x)
            assert np.array_equal(out, plain.quantization.reference(x)), (name, mode)
        profile = lepton_runtime.load(path, mode="sim").profile(x)
        cycles[name] = sum(k.cycles for k in profile.kernels if k.unit == "npu")
    chosen = min(totals, key=lambda k: (totals[k], -len(k)))
    layers = [f"dense_{i}" for i in range(3)]
    assert [(c["producer"], c["consumer"]) for c in tuned.report.cascades] == \
        [(layers[i], layers[i + 1]) for i in chosen]
    # the plans it scheduled are the optimum's: their recorded cycles add up to it
    plans = [c["plan"] for c in json.loads(_members(tmp_path / "tuned.lepton")[fmt.PLAN])[
        "calls"] if c.get("ops") and c["ops"][0] in layers]
    roles = [set() for _ in workloads]
    for i in chosen:
        roles[i].add("output")
        roles[i + 1].add("input")
    recorded = [next(r["cost"] for r in db.measured_ok(w, sorted(held)) if {
        k: v for k, v in r["knobs"].items() if k != "resident"} == knobs)
        for w, held, knobs in zip(workloads, roles, plans, strict=True)]
    assert sum(recorded) == totals[chosen]
    # layers scheduled with another plan than their best uncascaded one are reported
    replanned = {layer for c in tuned.report.cascades for layer in c["replanned"]}
    assert replanned == {layer for layer, w, knobs in zip(layers, workloads, plans,
                                                          strict=True)
                         if knobs != {k: v for k, v in db.best(w)["knobs"].items()}}
    assert replanned and all(  # the optimum here replans a layer (dense_2)
        layer in str(tuned.report).split("replanned ")[1] for layer in replanned)
    # a GEMM layer's sim cycles do not depend on its data: the model runs what was measured
    assert cycles["tuned"] == totals[chosen] <= cycles["plain"]
    assert len(plain.report.cascades) == 1
