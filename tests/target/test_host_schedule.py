"""Host schedule parameters and fallback pricing come from the resolved CPU's features."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lepton_compiler.target.host import HostTarget
from lepton_compiler.target.host_schedule import (
    VECTOR_FEATURES,
    HostScheduleConfig,
    HostThroughput,
)


@pytest.mark.parametrize("features, lanes, budget", [
    ({"avx512f", "avx"}, 16, 24),
    ({"avx"}, 8, 12),
    (set(), 4, 12),
])
def test_lanes_and_registers_follow_the_widest_vector_unit(features, lanes, budget):
    config = HostScheduleConfig.for_features(features)
    assert (config.vector_lanes, config.accumulator_budget) == (lanes, budget)


def test_a_resolved_host_uses_its_own_flags():
    avx2 = HostTarget("x86-64-v3", 2, ("avx", "avx2", "fma"))
    avx512 = HostTarget("x86-64-v4", 2, ("avx", "avx2", "fma", "avx512f"))
    assert HostScheduleConfig.for_host(avx2).vector_lanes == 8
    assert HostScheduleConfig.for_host(avx512).vector_lanes == 16
    assert avx2.features(VECTOR_FEATURES) == {"avx"}


def test_a_named_cpu_is_read_from_llvm_cpu_table():
    assert HostScheduleConfig.for_host(HostTarget("skylake-avx512", 1)).vector_lanes == 16
    assert HostScheduleConfig.for_host(HostTarget("haswell", 1)).vector_lanes == 8


def test_fallback_throughput_scales_with_lanes_and_cores():
    narrow = HostThroughput.for_host(HostTarget("x86-64-v3", 2, ("avx",)))
    wide = HostThroughput.for_host(HostTarget("x86-64-v4", 2, ("avx", "avx512f")))
    wide4 = HostThroughput.for_host(HostTarget("x86-64-v4", 4, ("avx", "avx512f")))
    assert wide.macs_per_s == 2 * narrow.macs_per_s
    assert wide4.macs_per_s == 2 * wide.macs_per_s
    assert wide4.bytes_per_s == 2 * wide.bytes_per_s == 2 * narrow.bytes_per_s


def _depthwise_kernel(size, channels, kernel, stride, dilation, padding):
    """A legalized NHWC depthwise conv2d + ReLU6 prim_func (the shape fused kernels take)."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, size, size, channels), "float32"))
    w = relax.Var("w", relax.TensorType((kernel, kernel, 1, channels), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, strides=stride, padding=padding,
                                           dilation=dilation, groups=channels,
                                           data_layout="NHWC", kernel_layout="HWIO"))
            out = bb.emit_output(relax.op.clip(y, 0.0, 6.0))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(
        relax.transform.AnnotateTIROpPattern()(mod)))
    return next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))


@settings(max_examples=10, deadline=None)
@given(size=st.integers(5, 20), channels=st.sampled_from([16, 32, 48, 24]),
       kernel=st.sampled_from([3, 5]), stride=st.sampled_from([1, 2]),
       dilation=st.sampled_from([1, 2]), padding=st.integers(0, 2),
       features=st.sampled_from([("avx512f", "avx"), ("avx",)]))
def test_depthwise_schedule_matches_torch(size, channels, kernel, stride, dilation, padding,
                                          features):
    """The windowed depthwise schedule (input pixels of a kernel row held in registers,
    padding read in place) computes the convolution; channel counts that are not whole
    vectors take the plain register tile."""
    import numpy as np
    import torch
    import tvm
    from tvm import s_tir

    from lepton_compiler import tvm_compat
    from lepton_compiler.target.host import resolve_host
    from lepton_compiler.target.host_schedule import schedule_prim_func

    span = (kernel - 1) * dilation + 1
    assume(size + 2 * padding >= span)
    func = _depthwise_kernel(size, channels, kernel, stride, dilation, padding)
    config = HostScheduleConfig.for_features(set(features))
    scheduled = schedule_prim_func(func, config)
    sch = s_tir.Schedule(scheduled)
    names = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    windowed = any(n.endswith("_local") and "conv" not in n for n in names)
    assert windowed == (channels % config.vector_lanes == 0), names
    host = resolve_host(None)
    fn = tvm_compat.compile_tir(tvm.IRModule({"main": scheduled.with_attr("global_symbol",
                                                                          "main")}),
                                host.tvm_target())["main"]
    rng = np.random.default_rng(size * 7 + channels)
    x = rng.standard_normal((1, size, size, channels)).astype(np.float32)
    w = rng.standard_normal((kernel, kernel, 1, channels)).astype(np.float32)
    expect = torch.nn.functional.conv2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(w).permute(3, 2, 0, 1),
        stride=stride, padding=padding, dilation=dilation, groups=channels,
    ).clamp(0, 6).permute(0, 2, 3, 1).numpy()
    out = tvm.runtime.tensor(np.zeros(expect.shape, np.float32))
    fn(tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cols, rows, lanes, tile", [
    (24, 56, 16, (24, 8)),   # 24 channels: three half-width vectors, not one 12-lane vector
    (40, 28, 16, (40, 4)),
    (96, 112, 16, (48, 8)),
    (192, 28, 16, (48, 7)),
    (24, 56, 8, (24, 4)),
])
def test_register_tiles_use_narrower_vectors_for_odd_channel_counts(cols, rows, lanes, tile):
    from lepton_compiler.target.host_schedule import _register_tile

    features = {"avx512f", "avx"} if lanes == 16 else {"avx"}
    assert _register_tile(cols, rows, HostScheduleConfig.for_features(features)) == tile


@pytest.mark.parametrize("cout", [24, 40, 20, 96])
def test_pointwise_conv_with_any_channel_count_matches_torch(cout):
    import numpy as np
    import torch
    import tvm
    from tvm import relax

    from lepton_compiler import tvm_compat
    from lepton_compiler.target.host import resolve_host
    from lepton_compiler.target.host_schedule import schedule_prim_func

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 14, 14, 48), "float32"))
    w = relax.Var("w", relax.TensorType((1, 1, 48, cout), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="HWIO"))
            out = bb.emit_output(relax.op.clip(y, 0.0, 6.0))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(
        relax.transform.AnnotateTIROpPattern()(mod)))
    func = next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    host = resolve_host(None)
    scheduled = schedule_prim_func(func, HostScheduleConfig.for_host(host))
    assert "T.unroll" in scheduled.script()  # the register-tiled schedule, not the fallback
    fn = tvm_compat.compile_tir(tvm.IRModule({"main": scheduled.with_attr("global_symbol",
                                                                          "main")}),
                                host.tvm_target())["main"]
    rng = np.random.default_rng(cout)
    xs = rng.standard_normal((1, 14, 14, 48)).astype(np.float32)
    ws = rng.standard_normal((1, 1, 48, cout)).astype(np.float32)
    expect = torch.nn.functional.conv2d(
        torch.from_numpy(xs).permute(0, 3, 1, 2), torch.from_numpy(ws).permute(3, 2, 0, 1),
    ).clamp(0, 6).permute(0, 2, 3, 1).numpy()
    out = tvm.runtime.tensor(np.zeros(expect.shape, np.float32))
    fn(tvm.runtime.tensor(xs), tvm.runtime.tensor(ws), out)
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-5, atol=1e-4)
