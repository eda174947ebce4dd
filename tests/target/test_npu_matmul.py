"""Tensorized int8 matmul on the Lepton GEMM instruction: bit-exact in both modes, sim laws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_compiler.target.intrinsics import intrinsic_names, register_intrinsics
from lepton_compiler.target.npu_kernels import build_matmul
from lepton_compiler.target.npu_schedule import (
    GemmPlan,
    SramOverflowError,
    check_working_set,
    plan_gemm,
    sram_needs,
)
from lepton_compiler.target.spec import load_spec


def _operands(m: int, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(-128, 128, (m, k), dtype=np.int8),
            rng.integers(-128, 128, (k, n), dtype=np.int8))


def _reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The integer semantics: int8 x int8 products summed exactly in int32."""
    return a.astype(np.int32) @ b.astype(np.int32)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 70), st.integers(1, 70), st.integers(1, 90), st.integers(0, 2**16))
def test_matmul_is_bit_exact_in_both_modes(m, n, k, seed):
    kernel = build_matmul(m, n, k)
    a, b = _operands(m, n, k, seed)
    expected = _reference(a, b)
    assert np.array_equal(kernel.run(a, b, "fast"), expected)
    assert np.array_equal(kernel.run(a, b, "sim"), expected)


def test_extreme_values_accumulate_exactly():
    k = 160  # 160 * 128 * 128 products: far beyond int16, well within int32
    kernel = build_matmul(16, 16, k)
    a = np.full((16, k), -128, np.int8)
    b = np.full((k, 16), -128, np.int8)
    assert np.array_equal(kernel.run(a, b, "sim"), _reference(a, b))


def test_sim_accounting_laws():
    spec = load_spec()
    m, n, k = 40, 24, 72
    kernel = build_matmul(m, n, k)
    a, b = _operands(m, n, k, 0)
    kernel.counters(reset=True)
    kernel.run(a, b, "fast")
    assert kernel.counters()["gemm_calls"] == 0  # fast mode does no accounting
    kernel.run(a, b, "sim")
    counters = kernel.counters(reset=True)
    useful = m * n * k
    assert counters["macs_issued"] >= useful
    assert counters["compute_cycles"] >= useful / spec.matrix.macs_per_cycle
    pm, pn, pk = kernel.plan.padded
    assert counters["macs_issued"] == pm * pn * pk
    kernel.run(a, b, "sim")
    assert kernel.counters() == counters  # deterministic: same work, same counts


def test_other_tile_gives_correct_kernels_and_other_cycle_counts():
    data = load_spec().to_dict()
    data["matrix"].update(tile_m=8, tile_n=8, tile_k=8)
    small = load_spec(data)
    m, n, k = 32, 32, 32
    a, b = _operands(m, n, k, 1)
    big_kernel, small_kernel = build_matmul(m, n, k), build_matmul(m, n, k, small)
    assert np.array_equal(small_kernel.run(a, b, "sim"), _reference(a, b))
    big_kernel.run(a, b, "sim")
    assert small_kernel.counters()["compute_cycles"] == 4 * big_kernel.counters()[
        "compute_cycles"]
    assert intrinsic_names(small).gemm != intrinsic_names(load_spec()).gemm


def test_registration_is_idempotent():
    spec = load_spec()
    assert register_intrinsics(spec) == register_intrinsics(spec)


def test_working_set_larger_than_sram_is_an_error():
    spec = load_spec()
    too_deep = spec.sram.input_bytes // spec.matrix.tile_m + spec.matrix.tile_k
    plan = GemmPlan(16, 16, too_deep, (16, 16, too_deep), too_deep)
    with pytest.raises(SramOverflowError, match=r"input SRAM working set is \d+ bytes"):
        check_working_set(plan, spec)
    deep = plan_gemm(16, 16, 100_000, spec)  # the planner stages a K block that fits
    check_working_set(deep, spec)
    for scope, need in sram_needs(deep, spec).items():
        assert need <= getattr(spec.sram, f"{scope}_bytes")


def test_portable_build_without_avx512_is_bit_exact():
    """A kernel built for a baseline CPU takes the portable C path: same bits."""
    m, n, k = 20, 30, 50
    a, b = _operands(m, n, k, 7)
    kernel = build_matmul(m, n, k, cpu="x86-64-v2")
    assert np.array_equal(kernel.run(a, b, "fast"), _reference(a, b))
    assert np.array_equal(kernel.run(a, b, "sim"), _reference(a, b))


def test_sim_dma_and_roofline_laws():
    spec = load_spec()
    m, n, k = 96, 80, 200
    kernel = build_matmul(m, n, k)
    a, b = _operands(m, n, k, 5)
    report = kernel.sim_report(a, b)
    assert report["cycles"] >= report["macs_useful"] / spec.matrix.macs_per_cycle
    assert report["cycles"] >= report["roofline_cycles"]
    assert report["dram_bytes"] >= a.nbytes + b.nbytes + m * n * 4  # inputs + weights + out
    assert report["macs_issued"] >= report["macs_useful"] == m * n * k
    for scope in ("input", "weight", "accumulator"):
        assert report[f"sram_{scope}_bytes"] <= getattr(spec.sram, f"{scope}_bytes")


def test_large_matmul_reaches_seventy_percent_utilisation_in_sim():
    m = n = k = 512
    kernel = build_matmul(m, n, k)
    a, b = _operands(m, n, k, 6)
    assert np.array_equal(kernel.run(a, b, "sim"), _reference(a, b))
    assert kernel.sim_report(a, b)["utilisation"] >= 0.70


def test_avx2_build_is_bit_exact():
    """A kernel built for an AVX2-only CPU takes the AVX2 C path: same bits."""
    m, n, k = 33, 40, 71  # odd sizes: padded to the tile
    a, b = _operands(m, n, k, 8)
    kernel = build_matmul(m, n, k, cpu="haswell")
    assert np.array_equal(kernel.run(a, b, "fast"), _reference(a, b))
    assert np.array_equal(kernel.run(a, b, "sim"), _reference(a, b))
