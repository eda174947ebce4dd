"""Vector-unit instructions: int8 max pooling and int32 residual add, bit-exact in both modes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_compiler.target.intrinsics import register_vector_op
from lepton_compiler.target.npu_vector_kernels import build_add_i32, build_maxpool
from lepton_compiler.target.spec import load_spec


def reference_maxpool(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-128)
    oh = (x.shape[1] + 2 * pad - k) // stride + 1
    ow = (x.shape[2] + 2 * pad - k) // stride + 1
    out = np.full((x.shape[0], oh, ow, x.shape[3]), -128, np.int8)
    for ky in range(k):
        for kx in range(k):
            window = xp[:, ky: ky + stride * (oh - 1) + 1: stride,
                        kx: kx + stride * (ow - 1) + 1: stride, :]
            out = np.maximum(out, window)
    return out


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 10), st.integers(1, 40), st.sampled_from([(2, 2, 0), (3, 2, 1), (3, 1, 1)]),
       st.integers(0, 2**16))
def test_maxpool_is_bit_exact(size, channels, window, seed):
    k, stride, pad = window
    size = max(size, k - 2 * pad)
    x = np.random.default_rng(seed).integers(-128, 128, (1, size, size, channels), np.int8)
    kernel = build_maxpool(1, size, size, channels, k, stride, pad)
    expected = reference_maxpool(x, k, stride, pad)
    assert np.array_equal(kernel.run(x), expected)
    assert np.array_equal(kernel.run(x, mode="sim"), expected)
    assert kernel.counters(reset=True)["vector_cycles"] > 0


def test_int32_add_wraps_like_the_reference():
    rng = np.random.default_rng(1)
    a = rng.integers(-(2**31), 2**31, 37, dtype=np.int64).astype(np.int32)
    b = rng.integers(-(2**31), 2**31, 37, dtype=np.int64).astype(np.int32)
    kernel = build_add_i32(37)
    expected = (a.astype(np.int64) + b).astype(np.int32)  # two's-complement wrap
    assert np.array_equal(kernel.run(a, b), expected)
    assert np.array_equal(kernel.run(a, b, mode="sim"), expected)
    lanes = load_spec().vector.lanes
    assert kernel.counters(reset=True)["vector_cycles"] == -(-37 // lanes)


def test_unknown_vector_op():
    with pytest.raises(ValueError, match="unknown vector op 'fma'"):
        register_vector_op(load_spec(), "fma")
