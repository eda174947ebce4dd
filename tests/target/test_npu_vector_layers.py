"""int8 layers on the vector unit (depthwise/grouped conv2d, max pooling, mean, residual add,
clamp): bit-exact to the numpy integer reference in fast and sim modes, and the sim's laws —
cycles at least the work over the lanes, DRAM bytes at least every operand and result once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lepton_compiler.target import qkernels, reference
from lepton_compiler.target.npu_fast import pack_depthwise
from lepton_compiler.target.npu_kernels import Conv2dShape
from lepton_compiler.target.npu_schedule import SramOverflowError
from lepton_compiler.target.npu_vector import VectorWork, plan_vector
from lepton_compiler.target.npu_vector_kernels import build_vector_layer
from lepton_compiler.target.spec import load_spec

SPEC = load_spec()
LANES = SPEC.vector.lanes


def _requant_terms(rng, cout: int, taps: int):
    bias = rng.integers(-(2**14), 2**14, cout).astype(np.int32)
    mult = rng.integers(2**29, 2**31 - 1, cout).astype(np.int32)
    shift = rng.integers(34, 40, cout).astype(np.int32)
    return bias, mult, shift


def _laws(kernel, counters: dict[str, int], outputs: int) -> None:
    plan = kernel.plan
    assert counters["dram_bytes"] >= plan.min_dram_bytes  # every operand and result once
    # one op per cycle on at most `lanes` lanes: cycles >= lane-work / lanes
    assert counters["vector_cycles"] * LANES >= counters["vector_lanes"] > 0
    assert counters["vector_cycles"] >= -(-max(plan.useful_macs, outputs) // LANES)
    assert counters["compute_cycles"] == counters["macs_issued"] == 0  # no matrix engine


# Each example compiles a kernel: no shrinking (a failing example is reported as drawn).
QUICK = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow],
         "phases": [Phase.explicit, Phase.reuse, Phase.generate]}


@settings(max_examples=8, **QUICK)
@given(k=st.sampled_from([3, 5]), stride=st.sampled_from([1, 2]),
       channels=st.sampled_from([1, 7, 17, 33]), size=st.integers(3, 9),
       pad=st.sampled_from(["same", "none", "uneven"]), seed=st.integers(0, 2**16))
def test_depthwise_conv_is_bit_exact_in_both_modes(k, stride, channels, size, pad, seed):
    _check_conv(k, stride, channels, channels, channels, size, pad, seed)


@settings(max_examples=5, **QUICK)
@given(k=st.sampled_from([3, 5]), stride=st.sampled_from([1, 2]),
       groups_cin=st.sampled_from([(3, 9, 6), (2, 6, 10), (5, 15, 25)]),
       size=st.integers(5, 8), seed=st.integers(0, 2**16))
def test_grouped_conv_is_bit_exact_in_both_modes(k, stride, groups_cin, size, seed):
    groups, cin, cout = groups_cin
    _check_conv(k, stride, groups, cin, cout, size, "same", seed)


def _check_conv(k: int, stride: int, groups: int, cin: int, cout: int, size: int, pad: str,
                seed: int) -> None:
    rng = np.random.default_rng(seed)
    padding = {"same": (k // 2,) * 4, "none": (0,) * 4, "uneven": (k // 2, 0, 0, k // 2)}[pad]
    size = max(size, k)
    shape = Conv2dShape(1, size, size + 1, cin, cout, k, k, (stride, stride), padding)
    zp = int(rng.integers(-128, 128))
    x = rng.integers(-128, 128, (1, size, size + 1, cin), dtype=np.int8)
    w = rng.integers(-127, 128, (k, k, cin // groups, cout), dtype=np.int8)
    bias, mult, shift = _requant_terms(rng, cout, k * k * cin // groups)
    qp = np.array([int(rng.integers(-20, 20)), -128 + int(rng.integers(0, 60)),
                   127 - int(rng.integers(0, 2)) * 20], np.int32)  # with or without clamps
    expected = reference.grouped_conv2d(x, w, groups, bias, mult, shift, zp, *qp, shape.stride,
                                        padding, (1, 1))
    oh, ow = shape.out_hw
    work = VectorWork.of("conv", groups=groups, n=1, h=shape.h, w=shape.w, cin=cin,
                         cout=cout, kh=k, kw=k, sh=stride, sw=stride, dh=1, dw=1,
                         top=padding[0], left=padding[1], oh=oh, ow=ow, in_zp=zp)
    kernel = build_vector_layer(work.mark(qkernels.grouped_conv2d_func(shape, groups, zp)))
    depthwise = groups == cin == cout
    weights = pack_depthwise(w, bias, mult, shift) if depthwise else w
    args = (x, weights, bias, mult, shift, qp)
    for mode in ("fast", "sim"):
        kernel.counters(reset=True)
        out = kernel.run(*args, mode=mode).reshape(expected.shape)
        assert np.array_equal(out, expected), mode
        counters = kernel.counters(reset=True)
        if mode == "sim":
            _laws(kernel, counters, out.size)
            # the sim counts one mul_add per tap, input channel, pixel and block of lanes
            taps_ops = k * k * (cin // groups) * oh * ow * -(-cout // LANES)
            # and the requantize: 7 ops, less the clamps the saturating cast makes redundant
            ops = 5 + (qp[1] > -128) + (qp[2] < 127)
            assert counters["vector_cycles"] == taps_ops + ops * oh * ow * -(-cout // LANES)
        else:
            assert counters["vector_cycles"] == counters["dram_bytes"] == 0


@pytest.mark.parametrize("pool,stride,pad,channels", [((3, 3), (2, 2), (1, 1, 1, 1), 20),
                                                      ((2, 2), (2, 2), (0, 0, 0, 0), 16),
                                                      ((3, 3), (1, 1), (1, 1, 1, 1), 5)])
def test_max_pool_on_the_vector_unit_is_exact(pool, stride, pad, channels):
    rng = np.random.default_rng(channels)
    n, h, w = 2, 9, 8
    x = rng.integers(-128, 128, (n, h, w, channels), dtype=np.int8)
    expected = reference.max_pool2d(x, pool, stride, pad)
    oh, ow = expected.shape[1:3]
    work = VectorWork.of("maxpool", n=n, h=h, w=w, c=channels, ph=pool[0], pw=pool[1],
                         sh=stride[0], sw=stride[1], top=pad[0], left=pad[1], oh=oh, ow=ow)
    func = qkernels.max_pool2d_func(n, h, w, channels, pool, stride, pad, (oh, ow))
    kernel = build_vector_layer(work.mark(func))
    assert np.array_equal(kernel.run(x, mode="fast"), expected)
    kernel.counters(reset=True)
    assert np.array_equal(kernel.run(x, mode="sim"), expected)
    _laws(kernel, kernel.counters(reset=True), expected.size)


@pytest.mark.parametrize("shape,axes", [((2, 5, 6, 40), (1, 2)), ((3, 70, 24), (1,))])
def test_mean_on_the_vector_unit_is_exact(shape, axes):
    rng = np.random.default_rng(len(shape))
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    count = int(np.prod([shape[a] for a in axes]))
    zi, mult, shift, zo = 5, 1_518_500_250, 31 + int(np.log2(count)), -3
    expected = reference.mean(x, axes, False, zi, mult, shift, zo)
    work = VectorWork.of("mean", outer=int(np.prod(shape[:axes[0]])), count=count,
                         inner=int(np.prod(shape[axes[-1] + 1:])), zi=zi, mult=mult,
                         shift=shift, zo=zo)
    kernel = build_vector_layer(work.mark(qkernels.mean_func(shape, axes, False, zi, mult,
                                                             shift, zo)))
    assert np.array_equal(kernel.run(x, mode="fast").reshape(expected.shape), expected)
    kernel.counters(reset=True)
    assert np.array_equal(kernel.run(x, mode="sim").reshape(expected.shape), expected)
    _laws(kernel, kernel.counters(reset=True), expected.size)


@pytest.mark.parametrize("size", [37, 70_001])  # one chunk; several chunks with a ragged end
def test_residual_add_and_clamp_on_the_vector_unit_are_exact(size):
    rng = np.random.default_rng(size)
    a = rng.integers(-128, 128, (size,), dtype=np.int8)
    b = rng.integers(-128, 128, (size,), dtype=np.int8)
    p = {"za": 3, "ma": 1_000_000_007, "zb": -9, "mb": 700_000_001, "shift": 31, "zo": 4,
         "lo": -2, "hi": 127}
    expected = reference.add(a, b, *p.values())
    add = build_vector_layer(VectorWork.of("add", size=size, **p).mark(
        qkernels.add_func((size,), *p.values())))
    clamp = build_vector_layer(VectorWork.of("clamp", size=size, lo=-7, hi=90).mark(
        qkernels.clamp_func((size,), -7, 90)))
    for mode in ("fast", "sim"):
        add.counters(reset=True)
        assert np.array_equal(add.run(a, b, mode=mode), expected), mode
        assert np.array_equal(clamp.run(a, mode=mode), reference.clamp(a, -7, 90)), mode
        if mode == "sim":
            counters = add.counters(reset=True)
            _laws(add, counters, size)
            chunks = -(-size // add.plan.band)
            assert counters["dma_transfers"] == 3 * chunks


def test_a_layer_whose_band_cannot_fit_is_refused_with_the_sizes():
    wide = VectorWork.of("maxpool", n=1, h=4, w=70_000, c=16, ph=3, pw=3, sh=1, sw=1, top=1,
                         left=1, oh=4, ow=70_000)
    with pytest.raises(SramOverflowError, match=r"vector-unit maxpool: one band needs \d+ "
                                                r"bytes of input SRAM but the spec's input "
                                                r"SRAM holds 65536"):
        plan_vector(wide, SPEC)
    with pytest.raises(ValueError, match="do not match"):
        VectorWork.of("clamp", size=4, lo=0)
