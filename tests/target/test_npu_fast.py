"""Fast mode's whole-layer engine (``npu_fast``, ``lepton_layer_i8``): packed weights, and
fast == sim == the integer reference bit for bit on layer shapes that stress every edge (K not
a multiple of 4, columns not a multiple of 16, row counts around the micro-tile, padding,
stride, dilation, a thin first layer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lepton_compiler as lc
import lepton_runtime
from lepton_compiler.target import reference
from lepton_compiler.target.host import resolve_host
from lepton_compiler.target.npu_codegen import GEMM_PATHS, best_gemm_path, npu_object
from lepton_compiler.target.npu_fast import (
    COL_TERMS,
    conv_layer,
    pack_depthwise,
    pack_layer,
    pack_weights,
    packed_shape,
    unpack_weights,
)
from lepton_compiler.target.npu_kernels import Conv2dShape
from lepton_compiler.target.spec import load_spec

_PATHS = [name for name, _, _ in GEMM_PATHS]
#: The GEMM paths this machine can run: its best one and every one below it.
RUNNABLE = _PATHS[_PATHS.index(best_gemm_path(resolve_host(None))):]


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 70), n=st.integers(1, 50), seed=st.integers(0, 2**31 - 1))
def test_packing_round_trips_and_pads_with_zero(k, n, seed):
    w = np.random.default_rng(seed).integers(-128, 128, (k, n), dtype=np.int8)
    packed = pack_weights(w)
    assert packed.shape == packed_shape(k, n) and packed.dtype == np.uint8
    assert np.array_equal(unpack_weights(packed, k, n), w)
    # The block for column j, reduction step kk holds w + 128; everything else is 0.
    j, kk = n - 1, k - 1
    assert packed[j // 16, kk // 4, j % 16, kk % 4] == int(w[kk, j]) + 128
    assert packed.astype(np.int64).sum() == (w.astype(np.int64) + 128).sum()


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """``lepton_layer_i8`` of each runnable GEMM path, called through ctypes."""
    import ctypes
    import subprocess

    import tvm_ffi.libinfo

    out = {}
    for path in RUNNABLE:
        workdir = tmp_path_factory.mktemp(path)
        obj, built = npu_object(load_spec(None), workdir, path=path)
        assert built == path
        so = workdir / "engine.so"
        subprocess.run(["cc", "-shared", "-o", str(so), obj, tvm_ffi.libinfo.find_libtvm_ffi()],
                       check=True)
        lib = ctypes.CDLL(str(so))
        lib.lepton_layer_i8.restype = ctypes.c_int
        lib.lepton_dwconv_i8.restype = ctypes.c_int
        out[path] = lib
    return out


def _run_layer(lib, x, packed, bias, mult, shift, qp, layer, out_shape, entry="layer"):
    import ctypes

    out = np.zeros(out_shape, np.int8)
    ptr = [a.ctypes.data_as(ctypes.c_void_p) for a in (x, packed, bias, mult, shift, qp, out)]
    call = lib.lepton_layer_i8 if entry == "layer" else lib.lepton_dwconv_i8
    rc = call(*ptr, *(ctypes.c_int32(v) for v in layer))
    assert rc == 1
    return out


#: The exact ways the fast epilogue computes the requantize formula (``requant_mode`` in
#: lepton_npu.c), each forced by its terms: every shift >= 33 (high halves of 32 x 32-bit
#: products; the zero point folded into the rounding term while every shift <= 54, added
#: after the shift otherwise: "high32_late_zp"), some shift < 33 (full 64-bit products), and
#: acc + bias beyond int32 (int64 sums).
REQUANT_MODES = ("high32", "high32_late_zp", "products64", "wide")


def _requant_terms(rng, mode: str, cout: int, k: int):
    mult = rng.integers(2**30, 2**31 - 1, cout, dtype=np.int32)
    if mode == "wide":  # |bias| + k * 2^14 >= 2^31; large shifts keep results off the rails
        bias = (rng.choice([-1, 1], cout) * rng.integers(2**31 - 2**20, 2**31 - 1, cout)
                ).astype(np.int32)
        shift = rng.integers(56, 63, cout, dtype=np.int32)
    else:
        bias = rng.integers(-2**20, 2**20, cout, dtype=np.int32)
        shift = rng.integers(33, 46, cout, dtype=np.int32) if mode == "high32" else \
            rng.integers(33, 63, cout, dtype=np.int32) if mode == "high32_late_zp" else \
            rng.integers(20, 40, cout, dtype=np.int32)
        if mode == "products64":
            shift[0] = 24  # at least one below 33
        if mode == "high32_late_zp":
            shift[0] = 60  # at least one above 54
    return bias, mult, shift


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12), cin=st.integers(1, 40),
       cout=st.integers(1, 70), kh=st.integers(1, 4), kw=st.integers(1, 4),
       stride=st.integers(1, 3), dilation=st.integers(1, 2), pad=st.integers(0, 3),
       zp=st.integers(-128, 127), mode=st.sampled_from(REQUANT_MODES),
       seed=st.integers(0, 2**31 - 1))
def test_every_gemm_path_computes_a_conv_layer_exactly(engines, n, h, w, cin, cout, kh, kw,
                                                       stride, dilation, pad, zp, mode, seed):
    shape = Conv2dShape(n, h, w, cin, cout, kh, kw, (stride, stride), (pad, pad, pad, pad),
                        (dilation, dilation))
    oh, ow = shape.out_hw
    if oh < 1 or ow < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n, h, w, cin), dtype=np.int8)
    wts = rng.integers(-128, 128, (kh, kw, cin, cout), dtype=np.int8)
    bias, mult, shift = _requant_terms(rng, mode, cout, kh * kw * cin)
    qp = np.array([rng.integers(-20, 20), -128 + rng.integers(0, 60), 127 - rng.integers(0, 60)],
                  np.int32)
    expected = reference.conv2d(x, wts, bias, mult, shift, zp, int(qp[0]), int(qp[1]),
                                int(qp[2]), shape.stride, shape.padding, shape.dilation)
    packed = pack_layer(wts.reshape(-1, cout), bias, mult, shift)
    for path, lib in engines.items():
        got = _run_layer(lib, x, packed, bias, mult, shift, qp, conv_layer(shape, zp),
                         (n * oh * ow, cout))
        assert np.array_equal(got.reshape(expected.shape), expected), path


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 14), w=st.integers(1, 14), c=st.integers(1, 80),
       k=st.sampled_from([1, 3, 5, 7]), stride=st.integers(1, 2), dilation=st.integers(1, 2),
       pad=st.integers(0, 3), zp=st.integers(-128, 127), mode=st.sampled_from(REQUANT_MODES),
       seed=st.integers(0, 2**31 - 1))
def test_every_path_computes_a_depthwise_layer_exactly(engines, n, h, w, c, k, stride,
                                                       dilation, pad, zp, mode, seed):
    shape = Conv2dShape(n, h, w, c, c, k, k, (stride, stride), (pad, pad, pad, pad),
                        (dilation, dilation))
    oh, ow = shape.out_hw
    if oh < 1 or ow < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n, h, w, c), dtype=np.int8)
    wts = rng.integers(-128, 128, (k, k, 1, c), dtype=np.int8)
    bias, mult, shift = _requant_terms(rng, mode, c, k * k)
    qp = np.array([rng.integers(-20, 20), -128 + rng.integers(0, 60), 127 - rng.integers(0, 60)],
                  np.int32)
    expected = reference.grouped_conv2d(x, wts, c, bias, mult, shift, zp, int(qp[0]),
                                        int(qp[1]), int(qp[2]), shape.stride, shape.padding,
                                        shape.dilation)
    packed = pack_depthwise(wts, bias, mult, shift)
    assert packed.size == -(-c // 16) * (COL_TERMS * 8 + k * k * 16 * 4)
    for path, lib in engines.items():
        got = _run_layer(lib, x, packed, bias, mult, shift, qp, conv_layer(shape, zp),
                         (n * oh * ow, c), entry="depthwise")
        assert np.array_equal(got.reshape(expected.shape), expected), path


class MobileBlock(torch.nn.Module):
    """An inverted-residual block: pointwise expand, depthwise 3x3 (stride 2, 40 channels:
    two full 16-channel blocks and a tail), depthwise 5x5 (dilation 2), pointwise project."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = torch.nn.Conv2d(5, 40, 1)
        self.dw3 = torch.nn.Conv2d(40, 40, 3, stride=2, padding=1, groups=40)
        self.dw5 = torch.nn.Conv2d(40, 40, 5, padding=4, dilation=2, groups=40)
        self.project = torch.nn.Conv2d(40, 12, 1)

    def forward(self, x):
        x = torch.nn.functional.relu6(self.expand(x))
        x = torch.nn.functional.relu6(self.dw3(x))
        return self.project(torch.relu(self.dw5(x)))


def test_depthwise_layers_are_exact_in_both_modes(tmp_path):
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    model = MobileBlock().eval()
    calibration = [(rng.standard_normal((1, 5, 17, 13)).astype(np.float32),) for _ in range(3)]
    compiled = lc.build(model, calibration[0], target="lepton",
                        quantize=lc.QuantConfig(calibration_data=calibration))
    path = compiled.export(tmp_path / "block.lepton")
    x = rng.standard_normal((1, 5, 17, 13)).astype(np.float32) * 2
    expected = compiled.quantization.reference(x)
    assert np.array_equal(lepton_runtime.load(path, mode="fast")(x), expected)
    assert np.array_equal(lepton_runtime.load(path, mode="sim")(x), expected)


class EdgeNet(torch.nn.Module):
    """A thin 7x7 first layer (K = 147), a dilated 3x3 with 20 output channels, a strided 1x1
    (the gathered path) and a 1x1 stride-1 one (rows read in place), then a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 24, 7, stride=2, padding=3)
        self.c2 = torch.nn.Conv2d(24, 20, 3, padding=2, dilation=2)
        self.c3 = torch.nn.Conv2d(20, 36, 1, stride=2)
        self.c4 = torch.nn.Conv2d(36, 32, 1)
        self.fc = torch.nn.Linear(32 * 4 * 5, 37)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = self.c4(torch.relu(self.c3(x)))
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def edge_artifact(tmp_path_factory):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = EdgeNet().eval()
    shape = (3, 3, 15, 19)  # 3 x 8 x 10 = 240 rows in the first layer: 20 micro-tiles
    calibration = [(rng.standard_normal(shape).astype(np.float32),) for _ in range(3)]
    compiled = lc.build(model, calibration[0], target="lepton",
                        quantize=lc.QuantConfig(calibration_data=calibration))
    path = compiled.export(tmp_path_factory.mktemp("fast") / "edge.lepton")
    return compiled, path, rng.standard_normal(shape).astype(np.float32) * 2


def test_fast_equals_sim_equals_the_integer_reference(edge_artifact):
    compiled, path, x = edge_artifact
    expected = compiled.quantization.reference(x)
    fast = lepton_runtime.load(path, mode="fast")(x)
    sim = lepton_runtime.load(path, mode="sim")(x)
    assert np.array_equal(fast, expected)
    assert np.array_equal(sim, expected)
    assert np.array_equal(compiled(x), expected)


@settings(max_examples=6, deadline=None)
@given(rows=st.integers(1, 30), k=st.integers(1, 40), n=st.integers(1, 40),
       seed=st.integers(0, 2**31 - 1))
def test_dense_layers_of_any_shape_are_exact(rows, k, n, seed):
    torch.manual_seed(seed % 1000)
    rng = np.random.default_rng(seed)
    model = torch.nn.Sequential(torch.nn.Linear(k, n), torch.nn.ReLU(),
                                torch.nn.Linear(n, 17)).eval()
    calibration = [(rng.standard_normal((rows, k)).astype(np.float32),) for _ in range(2)]
    compiled = lc.build(model, calibration[0], target="lepton",
                        quantize=lc.QuantConfig(calibration_data=calibration))
    x = rng.standard_normal((rows, k)).astype(np.float32) * 3
    assert np.array_equal(compiled(x), compiled.quantization.reference(x))
