"""Requantization on the NPU vector unit: bit-exact against the numpy integer reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_compiler.target import reference
from lepton_compiler.target.npu_kernels import build_requant


@pytest.fixture(scope="module")
def kernel():
    return build_requant(37, 21)  # odd sizes: padded to the tile on the host side


@settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32 - 1), st.integers(-128, 127), st.booleans())
def test_requant_is_bit_exact_in_both_modes(kernel, seed, zero_point, relu):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(2**31), 2**31, (37, 21), dtype=np.int64).astype(np.int32)
    multiplier = rng.integers(2**30, 2**31, 21, dtype=np.int64).astype(np.int32)
    shift = rng.integers(1, 63, 21).astype(np.int32)
    lo, hi = (zero_point, 127) if relu else (-128, 127)  # ReLU folds into the clamp
    expected = reference.requantize(acc, multiplier, shift, zero_point, lo, hi)
    assert np.array_equal(kernel.run(acc, multiplier, shift, zero_point, lo, hi), expected)
    assert np.array_equal(kernel.run(acc, multiplier, shift, zero_point, lo, hi, "sim"),
                          expected)
    # With a per-channel int32 bias added before the multiply (acc + bias stays in range).
    acc //= 4
    bias = rng.integers(-(2**24), 2**24, 21).astype(np.int32)
    expected = reference.requantize(acc, multiplier, shift, zero_point, lo, hi, bias)
    for mode in ("fast", "sim"):
        got = kernel.run(acc, multiplier, shift, zero_point, lo, hi, mode, bias=bias)
        assert np.array_equal(got, expected)


def test_rounding_is_half_up_at_exact_halves():
    acc = np.array([[1, 3, -1, -3, 5]], np.int32)
    out = reference.requantize(acc, np.full(5, 1 << 30, np.int32), np.full(5, 32, np.int32),
                               0, -128, 127)  # x * 2^30 / 2^32 = x / 4
    assert out.tolist() == [[0, 1, 0, -1, 1]]  # 0.25->0, 0.75->1, -0.25->0, -0.75->-1, 1.25->1


def test_sim_counts_vector_cycles(kernel):
    kernel.counters(reset=True)
    acc = np.zeros((37, 21), np.int32)
    kernel.run(acc, np.full(21, 1 << 30, np.int32), np.full(21, 31, np.int32), 0, -128, 127,
               "sim")
    assert kernel.counters(reset=True)["vector_cycles"] > 0


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-6, 1e6))
def test_quantize_multiplier_represents_the_scale(real):
    multiplier, shift = reference.quantize_multiplier(real)
    assert 2**30 <= multiplier < 2**31
    assert abs(multiplier * 2.0**-shift - real) <= real * 2.0**-30


def test_out_of_range_parameters_are_refused():
    with pytest.raises(ValueError, match="shift must lie in"):
        reference.requantize(np.zeros((1, 1), np.int32), np.ones(1, np.int32),
                             np.zeros(1, np.int32), 0, -128, 127)
    with pytest.raises(ValueError, match="out of range"):
        reference.quantize_multiplier(0.0)


@pytest.mark.parametrize("rows, n, m_block", [(49, 24, 1), (64, 48, 4), (64, 48, 1)])
def test_a_gemm_layer_charges_its_requantize_ragged_or_not(rows, n, m_block):
    """Every output block of a GEMM layer is requantized by the vector unit and stored once,
    whether the epilogue is tensorized (whole tiles) or, at a ragged edge, a host loop in the
    emulation: the sim charges both the same way, and the stores meet the byte law."""
    import torch
    import tvm
    import tvm_ffi

    from lepton_compiler import QuantConfig
    from lepton_compiler.target.npu_kernels import MODES, load_kernel_library, read_counters
    from lepton_compiler.target.npu_schedule import (
        REQUANT_OPS,
        sim_static,
    )
    from lepton_compiler.target.spec import load_spec
    from lepton_compiler.tuning.measure import build_candidate, random_args, run_candidate
    from lepton_compiler.tuning.tuner import extract_tasks
    from lepton_runtime.profile import sim_cycles

    torch.manual_seed(0)
    model = torch.nn.Linear(32, n).eval()
    x = np.random.default_rng(0).standard_normal((rows, 32)).astype(np.float32)
    (task,), spec, _, _ = extract_tasks(model, (x,), QuantConfig(calibration_data=[(x,)]))
    func = tvm.ir.load_json(task.func)
    knobs = {"k_block": 32, "weights_stationary": False, "m_block": m_block}
    so_bytes, plan = build_candidate(func, spec, knobs)
    module = load_kernel_library(so_bytes)
    module["lepton_npu_set_mode"](MODES["sim"])
    read_counters(module, reset=True)
    module["kernel"](*(tvm_ffi.from_dlpack(a) for a in random_args(func)))
    counters = read_counters(module, reset=True)
    pm, pn, _ = plan.padded
    assert counters["vector_cycles"] == pm * pn // spec.vector.lanes * REQUANT_OPS
    blocks = pm // (16 * m_block) * (pn // 16)
    assert counters["dma_transfers"] >= blocks  # one store per output block at least
    assert counters["dram_bytes"] >= rows * 32 + 32 * n + rows * n  # read once, write once
    static = sim_static(plan, load_spec())
    cycles = run_candidate(so_bytes, func, spec, plan, "sim")
    assert cycles == sim_cycles(counters, static)
    # K fits one block: the vector unit overlaps the products, exposing one block's requant
    compute, vector = counters["compute_cycles"], counters["vector_cycles"]
    block, window = static["requant_block_cycles"], static["overlap_window"]
    assert static["output_blocks"] == blocks and vector == blocks * block
    # each block's requantize overlaps the next block's last K block; the last one is exposed
    busy = min(compute + vector, compute + (blocks - 1) * max(0, block - window) + block)
    assert cycles == max(busy, counters["dma_cycles"]) + static["prologue_cycles"]
    assert busy < compute + vector  # a K block of 32 rows hides no 112-cycle requantize
    series = sim_cycles(counters, {**static, "output_blocks": 0})  # without the figures
    assert series == max(compute + vector, counters["dma_cycles"]) + \
        static["prologue_cycles"] >= cycles
