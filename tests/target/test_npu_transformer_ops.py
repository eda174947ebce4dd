"""Integer softmax, layer norm and table functions (GELU) on the vector unit: the C instruction
stream equals the numpy integer reference bit for bit in fast and sim modes, each stays within
a stated SQNR of the float op, and a transformer encoder block runs every layer on the NPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import lepton_compiler as lc
import lepton_runtime
from lepton_compiler.passes.layers.base import Layer, QParams
from lepton_compiler.passes.layers.layer_norm import LayerNorm
from lepton_compiler.passes.layers.lut import FUNCTIONS, make_table
from lepton_compiler.passes.layers.softmax import exp_table
from lepton_compiler.target import qkernels, reference
from lepton_compiler.target.npu_vector import VectorWork, extern_kernel
from lepton_compiler.target.npu_vector_kernels import build_vector_layer
from lepton_compiler.target.reference import SOFTMAX_RECIP_BITS, SOFTMAX_SCALE

QUICK = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow],
         "phases": [Phase.explicit, Phase.reuse, Phase.generate]}
#: Stated accuracy of each integer op against the float op on the same int8 input. Softmax's
#: is bounded by its output format (steps of 1/256: near-uniform rows of 300 probabilities
#: keep ~15 dB even rounded ideally), so it is stated against the ideal rounding: within one
#: step of it everywhere, and within 1 dB of its SQNR.
SQNR_DB = {"softmax_vs_ideal": -1.0, "layer_norm": 30.0, "gelu": 30.0}


def sqnr(reference_values: np.ndarray, values: np.ndarray) -> float:
    noise = np.sum((reference_values - values) ** 2)
    return float(10 * np.log10(np.sum(reference_values ** 2) / max(noise, 1e-30)))


def _both_modes(kernel, *args) -> np.ndarray:
    fast = kernel.run(*args, mode="fast")
    kernel.counters(reset=True)
    sim = kernel.run(*args, mode="sim")
    counters = kernel.counters(reset=True)
    assert np.array_equal(fast, sim)
    assert counters["vector_cycles"] > 0 and counters["dram_bytes"] >= 2 * fast.size
    return fast


@settings(max_examples=6, **QUICK)
@given(rows=st.integers(1, 40), length=st.sampled_from([1, 7, 16, 128, 300]),
       scale=st.sampled_from([0.02, 0.08, 0.3]), seed=st.integers(0, 2**16))
def test_softmax_is_bit_exact_and_close_to_float(rows, length, scale, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (rows, length), dtype=np.int8)
    table = exp_table(scale)
    expected = reference.softmax(x, table)
    work = VectorWork.of("softmax", rows=rows, len=length, recip_bits=SOFTMAX_RECIP_BITS)
    kernel = build_vector_layer(extern_kernel(work, [("X", x.shape, "int8"),
                                                     ("T", (256,), "int32"),
                                                     ("OUT", x.shape, "int8")]))
    got = _both_modes(kernel, x, table)
    assert np.array_equal(got, expected)
    real = torch.softmax(torch.from_numpy(x.astype(np.float64) * scale), -1).numpy()
    ideal = np.clip(np.floor(real / SOFTMAX_SCALE + 0.5) - 128, -128, 127)
    assert np.abs(got - ideal).max() <= 1

    def real_of(q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float64) + 128) * SOFTMAX_SCALE

    assert sqnr(real, real_of(got)) >= sqnr(real, real_of(ideal)) + SQNR_DB["softmax_vs_ideal"]


@settings(max_examples=6, **QUICK)
@given(rows=st.integers(1, 40), h=st.sampled_from([8, 64, 96, 768]),
       spread=st.sampled_from([3, 40, 127]), seed=st.integers(0, 2**16))
def test_layer_norm_is_bit_exact_and_close_to_float(rows, h, spread, seed):
    rng = np.random.default_rng(seed)
    x_q = QParams(0.05, int(rng.integers(-20, 20)))
    x = np.clip(rng.normal(0, spread, (rows, h)).round() + x_q.zero_point, -128, 127
                ).astype(np.int8)
    gamma, beta = rng.uniform(0.5, 1.5, h), rng.normal(0, 0.2, h)
    real = torch.nn.functional.layer_norm(
        torch.from_numpy(x_q.scale * (x.astype(np.float64) - x_q.zero_point)), (h,),
        torch.from_numpy(gamma), torch.from_numpy(beta), 1e-5).numpy()
    out = QParams(float(np.abs(real).max()) / 127 or 1.0, 0)
    layer = Layer("ln", "layer_norm", ["x"], "y",
                  attrs={"gamma": gamma, "beta": beta, "epsilon": 1e-5})
    p = LayerNorm().params(layer, [x_q], out, True)
    expected = reference.layer_norm(x, p.eps_term, p.gain, p.offset, p.shift)
    work = VectorWork.of("layernorm", rows=rows, h=h, eps_term=p.eps_term, shift=p.shift)
    kernel = build_vector_layer(extern_kernel(work, [
        ("X", x.shape, "int8"), ("GAIN", (h,), "int32"), ("OFFSET", (h,), "int64"),
        ("OUT", x.shape, "int8")]))
    got = _both_modes(kernel, x, p.gain, p.offset)
    assert np.array_equal(got, expected)
    assert sqnr(real, out.scale * got.astype(np.float64)) >= SQNR_DB["layer_norm"]


@pytest.mark.parametrize("op", sorted(FUNCTIONS))
def test_table_functions_are_bit_exact_and_close_to_float(op):
    x_q, out = QParams(0.04, -10), QParams(0.0222, -120)  # out covers GELU's range
    table = make_table(FUNCTIONS[op], x_q, out)
    x = np.arange(-128, 128, dtype=np.int8).repeat(3)  # every input value
    work = VectorWork.of("lut", size=x.size)
    kernel = build_vector_layer(work.mark(qkernels.lut_func(x.shape)))
    got = _both_modes(kernel, x, table)
    assert np.array_equal(got, reference.lut(x, table))
    if op == "relax.nn.gelu":
        real = torch.nn.functional.gelu(torch.from_numpy(
            x_q.scale * (x.astype(np.float64) - x_q.zero_point))).numpy()
        assert sqnr(real, out.scale * (got.astype(np.float64) - out.zero_point)) >= \
            SQNR_DB["gelu"]


def test_a_transformer_encoder_block_runs_every_layer_on_the_npu(tmp_path):
    model = lc.zoo.bert_encoder(layers=1, hidden=64, heads=4, ff=128)
    rng = np.random.default_rng(0)
    shape = (2, 16, 64)
    x = rng.standard_normal(shape).astype(np.float32)
    calib = [(rng.standard_normal(shape).astype(np.float32),) for _ in range(8)]
    compiled = lc.build(model, (x,), target="lepton",
                        quantize=lc.QuantConfig(calibration_data=calib))
    report = compiled.report
    int8 = [o for o in report.ops if o.dtype == "int8"]
    assert {"dense", "matmul", "softmax", "layer_norm", "lut", "add", "scale"} <= \
        {o.kind for o in int8}
    assert all(o.unit == "npu" for o in int8), [o.layer for o in int8 if o.unit != "npu"]
    # what stays on the host is the float input's layout before it is quantized
    assert all(o.dtype == "float32" and o.kind == "reshape" for o in report.fallbacks())
    assert not compiled.build_info["quantization"]["float"]
    expected = compiled.quantization.reference(x)
    path = compiled.export(tmp_path / "block.lepton")
    for mode in ("fast", "sim"):
        assert np.array_equal(lepton_runtime.load(path, mode=mode).run(x), expected), mode
    profile = lepton_runtime.load(path, mode="sim").profile(x)
    host = [k for k in profile.kernels if k.unit == "host"]
    assert all(k.kernel.startswith(("q_quantize", "q_dequantize")) for k in host)
    with torch.no_grad():
        real = model(torch.from_numpy(x)).numpy()
    cosine = expected.ravel() @ real.ravel() / np.linalg.norm(expected) / np.linalg.norm(real)
    assert cosine >= 0.99


def test_an_onnx_erf_gelu_becomes_one_table_on_the_npu():
    from .. import conftest

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(),
                                torch.nn.Linear(32, 16)).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    data = conftest.to_onnx_bytes(model, (torch.from_numpy(x),))
    assert "Erf" in {n.op_type for n in __import__("onnx").load_from_string(data).graph.node}
    compiled = lc.build(data, (x,), target="lepton", quantize=lc.QuantConfig(
        calibration_data=[(rng.standard_normal(x.shape).astype(np.float32),)
                          for _ in range(4)]))
    lut = [o for o in compiled.report.ops if o.kind == "lut"]
    assert len(lut) == 1 and lut[0].unit == "npu"
    assert all(o.unit == "npu" for o in compiled.report.ops if o.dtype == "int8")
    assert not compiled.build_info["quantization"]["float"]
    assert np.array_equal(compiled(x), compiled.quantization.reference(x))
    with torch.no_grad():
        real = model(torch.from_numpy(x)).numpy()
    got = compiled(x)
    assert got.ravel() @ real.ravel() / np.linalg.norm(got) / np.linalg.norm(real) > 0.99


def test_a_host_build_links_the_integer_transformer_ops(tmp_path):
    """int8 for the host CPU runs the same integer softmax and layer norm (their C code is
    linked into the host artifact), bit for bit, also after a reload."""
    model = lc.zoo.bert_encoder(layers=1, hidden=64, heads=4, ff=128)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 64)).astype(np.float32)
    calib = [(rng.standard_normal(x.shape).astype(np.float32),) for _ in range(4)]
    compiled = lc.build(model, (x,), target="host",
                        quantize=lc.QuantConfig(calibration_data=calib))
    assert {"softmax", "layer_norm"} <= {o.kind for o in compiled.report.ops
                                          if o.dtype == "int8"}
    expected = compiled.quantization.reference(x)
    assert np.array_equal(compiled(x), expected)
    session = lepton_runtime.load(compiled.export(tmp_path / "host.lepton"))
    assert np.array_equal(session.run(x), expected)
