"""int8 conv2d on the Lepton NPU (window gather + tensorized GEMM) against numpy, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_compiler.target.npu_kernels import Conv2dShape, build_conv2d


def reference_conv2d(x: np.ndarray, w: np.ndarray, s: Conv2dShape) -> np.ndarray:
    """Integer semantics of NHWC/HWIO conv2d: exact int32 sums of int8 products."""
    top, left, bottom, right = s.padding
    xp = np.pad(x.astype(np.int32), ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh, ow = s.out_hw
    out = np.zeros((s.n, oh, ow, s.cout), np.int32)
    for i in range(s.kh):
        for j in range(s.kw):
            y0, x0 = i * s.dilation[0], j * s.dilation[1]
            window = xp[:, y0: y0 + s.stride[0] * (oh - 1) + 1: s.stride[0],
                        x0: x0 + s.stride[1] * (ow - 1) + 1: s.stride[1], :]
            out += window @ w[i, j].astype(np.int32)
    return out


@st.composite
def conv_shapes(draw) -> Conv2dShape:
    k = draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2))
    pad = draw(st.integers(0, k // 2 * dilation))
    span = dilation * (k - 1) + 1
    h = draw(st.integers(max(1, span - 2 * pad), 12))
    w = draw(st.integers(max(1, span - 2 * pad), 12))
    return Conv2dShape(
        n=draw(st.integers(1, 2)), h=h, w=w, cin=draw(st.integers(1, 24)),
        cout=draw(st.integers(1, 40)), kh=k, kw=k, stride=(stride, stride),
        padding=(pad, pad, pad, pad), dilation=(dilation, dilation),
    )


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_shapes(), st.integers(0, 2**16))
def test_conv2d_is_bit_exact_in_both_modes(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (shape.n, shape.h, shape.w, shape.cin), dtype=np.int8)
    w = rng.integers(-128, 128, (shape.kh, shape.kw, shape.cin, shape.cout), dtype=np.int8)
    kernel = build_conv2d(shape)
    expected = reference_conv2d(x, w, shape)
    assert np.array_equal(kernel.run(x, w, "fast"), expected)
    assert np.array_equal(kernel.run(x, w, "sim"), expected)


def test_resnet_style_layer_with_asymmetric_padding():
    shape = Conv2dShape(1, 15, 15, 32, 48, 3, 3, stride=(2, 2), padding=(0, 0, 1, 1))
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (1, 15, 15, 32), dtype=np.int8)
    w = rng.integers(-128, 128, (3, 3, 32, 48), dtype=np.int8)
    kernel = build_conv2d(shape)
    assert kernel.run(x, w).shape == (1, 7, 7, 48)  # (15 + 0 + 1 - 3) // 2 + 1
    assert np.array_equal(kernel.run(x, w, "sim"), reference_conv2d(x, w, shape))


def test_column_blocked_stationary_weights_are_bit_exact_and_load_weights_once(tmp_path):
    """A conv whose weights exceed the weight SRAM, built with column-blocked stationary
    plans (forced through a tuning database): bit-exact in both modes, each weight loaded
    once and the input once per column block."""
    import torch

    import lepton_compiler as lc
    import lepton_runtime
    from lepton_compiler.target.npu_schedule import candidate_plans, estimated_dram_bytes
    from lepton_compiler.target.spec import load_spec
    from lepton_compiler.tuning.database import Database
    from lepton_compiler.tuning.tuner import extract_tasks

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(128, 256, 3, padding=1), torch.nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal((1, 128, 6, 6)).astype(np.float32)
    config = lc.QuantConfig(calibration_data=[(x,)])
    (task,), spec, _, _ = extract_tasks(model, (x,), config)
    m, n, k = 36, 256, 1152
    assert k * n > load_spec().sram.weight_bytes  # all of N's weights do not fit at once
    plans = [p for p in candidate_plans(m, n, k, spec) if p.n_block]
    picks = {(p.n_block, p.m_block): p for p in plans}  # one plan per block shape
    assert len(picks) >= 4
    for i, plan in enumerate(list(picks.values())[:4]):
        db = Database(tmp_path / f"db{i}")
        db.append({"workload": task.workload, "knobs": plan.knobs, "status": "ok",
                   "cost": 1.0, "unit": "cycles", "runner": "sim", "default": True})
        compiled = lc.build(model, (x,), target="lepton", quantize=config,
                            tuning_db=str(db.dir))
        assert list(compiled.build_info["tuned_kernels"].values()) == [plan.knobs]
        path = compiled.export(tmp_path / f"m{i}.lepton")
        expected = compiled.quantization.reference(x)
        for mode in ("fast", "sim"):
            assert np.array_equal(lepton_runtime.load(path, mode=mode).run(x), expected), \
                (plan.knobs, mode)
        conv = next(kp for kp in lepton_runtime.load(path, mode="sim").profile(x).kernels
                    if kp.layer == "conv2d_0")
        pm, pn, pk = plan.padded
        # every weight once, the input rows once (the line buffer gathers each column
        # block's A strips on chip), the output once
        assert conv.dram_bytes == pk * pn + x.size + m * n < estimated_dram_bytes(plan, spec)
        assert conv.counters["onchip_bytes"] == pn // plan.n_block * pm * pk
