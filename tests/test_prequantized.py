"""Pre-quantized ONNX models: onnxruntime's ``quantize_static`` QDQ output compiles to the
same int8 layers on the NPU with the model's own scales and zero points, and answers as
``onnx.reference`` runs the QDQ graph (within one output quantization step)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

import lepton_compiler as lc
from lepton_compiler.examples import zoo

from .conftest import to_onnx_bytes

BATCH = 4


class _Residual(torch.nn.Module):
    """conv + ReLU, a residual block, max pooling, flatten, two linear layers."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc1, self.fc2 = torch.nn.Linear(8 * 4 * 4, 32), torch.nn.Linear(32, 10)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.nn.functional.max_pool2d(torch.relu(self.b(y)) + y, 2)
        return self.fc2(torch.relu(self.fc1(y.flatten(1))))


class _Separable(torch.nn.Module):
    """A MobileNet/EfficientNet-Lite block: TF-style explicit pad, depthwise conv, ReLU6,
    pointwise conv, ReLU6, global average pooling, linear."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.dw = torch.nn.Conv2d(8, 8, 3, groups=8)
        self.pw = torch.nn.Conv2d(8, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        y = torch.clamp(self.stem(torch.nn.functional.pad(x, (0, 1, 0, 1))), 0, 6)
        y = torch.clamp(self.dw(torch.nn.functional.pad(y, (1, 1, 1, 1))), 0, 6)
        y = torch.clamp(self.pw(y), 0, 6)
        return self.fc(y.mean(dim=(2, 3)))


def test_depthwise_relu6_and_pads_follow_onnxruntime_qdq_semantics(tmp_path):
    torch.manual_seed(1)
    model = _Separable().eval()
    rng = np.random.default_rng(1)
    samples = [rng.standard_normal((BATCH, 3, 8, 8)).astype(np.float32) for _ in range(6)]
    path = tmp_path / "separable.onnx"
    path.write_bytes(to_onnx_bytes(model, (torch.from_numpy(samples[0]),)))
    qdq, name = _quantize(path, samples, "QUInt8")
    compiled = lc.build(qdq.SerializeToString(), target="lepton")
    summary = compiled.quantization.summary()
    assert {"conv2d_0", "conv2d_1", "conv2d_2", "dense_0"} <= set(summary["quantized"])
    assert not [n for n in summary["float"] if n.startswith(("pad", "conv", "clip"))], summary
    last = [n for n in qdq.graph.node if n.op_type == "DequantizeLinear"][-1]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}
    step = float(inits[last.input[1]])
    reference = ReferenceEvaluator(onnx.version_converter.convert_version(qdq, 21))
    for x in samples[4:]:
        want = reference.run(None, {name: x})[0]
        assert np.abs(compiled(x) - want).max() <= step * 1.001


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    torch.manual_seed(0)
    model = _Residual().eval()
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((BATCH, 3, 8, 8)).astype(np.float32) for _ in range(6)]
    path = tmp_path_factory.mktemp("qdq") / "float.onnx"
    path.write_bytes(to_onnx_bytes(model, (torch.from_numpy(samples[0]),)))
    return path, samples


def _quantize(path, samples, activations, fmt="QDQ", pre_process=True):
    """onnxruntime's ``quantize_static`` of the model at ``path`` (per-channel int8 weights,
    ``activations`` int8 or uint8), calibrated on ``samples[:4]``; ``pre_process``: fold
    constants first, as onnxruntime recommends."""
    name = ort.InferenceSession(str(path)).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: s} for s in samples[:4]])

        def get_next(self):
            return next(self.it, None)

    dst = path.with_name(f"{fmt.lower()}-{activations}.onnx")
    src = path
    if pre_process:
        src = path.with_name(f"pre-{path.name}")
        quant_pre_process(str(path), str(src), skip_symbolic_shape=True)
    quantize_static(str(src), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt),
                    per_channel=True, activation_type=getattr(QuantType, activations),
                    weight_type=QuantType.QInt8)
    return onnx.load(str(dst)), name


@pytest.mark.parametrize("activations", ["QUInt8", "QInt8"])
def test_an_onnxruntime_qdq_model_compiles_to_npu_int8_with_its_own_scales(float_model,
                                                                           activations):
    path, samples = float_model
    qdq, name = _quantize(path, samples, activations)
    compiled = lc.build(qdq.SerializeToString(), target="lepton")  # no calibration data
    summary = compiled.quantization.summary()
    assert summary["method"] == "pre-quantized" and summary["float"] == {}, summary
    assert {"conv2d_0", "conv2d_1", "add_0", "max_pool2d_0", "dense_0", "dense_1"} <= \
        set(summary["quantized"])
    assert len(compiled.build_info["npu_kernels"]) >= 4
    # The model's own output quantization: the QDQ pair's scale on the last Gemm.
    last = [n for n in qdq.graph.node if n.op_type == "DequantizeLinear"][-1]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}
    step = float(inits[last.input[1]])
    reference = ReferenceEvaluator(onnx.version_converter.convert_version(qdq, 21))
    for x in samples[4:]:
        want = reference.run(None, {name: x})[0]
        got = compiled(x)
        assert np.abs(got - want).max() <= step * 1.001


def test_a_qdq_model_missing_a_scale_keeps_that_layer_float_with_the_reason(float_model):
    path, samples = float_model
    qdq, name = _quantize(path, samples, "QInt8")
    # Drop the QDQ pair on the first conv's output: nothing says how to quantize it.
    graph = qdq.graph
    conv = next(n for n in graph.node if n.op_type == "Conv")
    after = {conv.output[0], *(m.output[0] for m in graph.node
                               if m.op_type == "Relu" and m.input[0] == conv.output[0])}
    quant = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in after)
    dequant = [n for n in graph.node if n.op_type == "DequantizeLinear"
               and n.input[0] == quant.output[0]]
    for n in graph.node:
        for d in dequant:
            n.input[:] = [quant.input[0] if i == d.output[0] else i for i in n.input]
    for n in [quant, *dequant]:
        graph.node.remove(n)
    compiled = lc.build(qdq.SerializeToString(), target="lepton")
    reasons = compiled.quantization.summary()["float"]
    assert any("no quantization for tensor" in r for r in reasons.values()), reasons
    x = samples[5]
    want = ort.InferenceSession(qdq.SerializeToString()).run(None, {name: x})[0]
    assert float(np.corrcoef(compiled(x).ravel(), want.ravel())[0, 1]) > 0.99


def test_a_float_model_has_no_pre_quantized_tensors():
    compiled = lc.build(zoo.mlp(), (np.zeros((1, 64), np.float32),), target="lepton")
    assert compiled.quantization is None


class _Plain(torch.nn.Module):
    """conv + ReLU, conv, flatten, linear: what QOperator format turns into QLinearConv,
    QLinearMatMul/QGemm."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(self.b(torch.relu(self.a(x))).flatten(1))


def test_a_qoperator_model_compiles_like_its_qdq_twin(tmp_path):
    torch.manual_seed(2)
    rng = np.random.default_rng(2)
    samples = [rng.standard_normal((BATCH, 3, 8, 8)).astype(np.float32) for _ in range(6)]
    path = tmp_path / "plain.onnx"
    path.write_bytes(to_onnx_bytes(_Plain().eval(), (torch.from_numpy(samples[0]),)))
    qop, name = _quantize(path, samples, "QUInt8", fmt="QOperator", pre_process=False)
    ops = {n.op_type for n in qop.graph.node}
    assert "QLinearConv" in ops and ops & {"QLinearMatMul", "QGemm"}, ops
    compiled = lc.build(qop.SerializeToString(), target="lepton")
    summary = compiled.quantization.summary()
    assert {"conv2d_0", "conv2d_1", "dense_0"} <= set(summary["quantized"]), summary
    assert len(compiled.build_info["npu_kernels"]) >= 2
    oracle = ort.InferenceSession(qop.SerializeToString(), providers=["CPUExecutionProvider"])
    last_q = [n for n in qop.graph.node if n.op_type == "DequantizeLinear"][-1]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in qop.graph.initializer}
    step = float(inits[last_q.input[1]])
    for x in samples[4:]:
        want = oracle.run(None, {name: x})[0]
        assert np.abs(compiled(x) - want).max() <= step * 1.001


def test_a_pytorch_pt2e_model_compiles_with_its_own_scales():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 8 * 8, 10)).eval()
    x = torch.randn(2, 3, 8, 8)
    prepared = prepare_pt2e(torch.export.export(model, (x,)).module(),
                            x86.X86InductorQuantizer().set_global(
                                x86.get_default_x86_inductor_quantization_config()))
    for _ in range(4):
        prepared(torch.randn(2, 3, 8, 8))
    quantized = convert_pt2e(prepared)
    compiled = lc.build(quantized, (x,), target="lepton")
    summary = compiled.quantization.summary()
    assert summary["method"] == "pre-quantized"
    assert {"conv2d_0", "conv2d_1"} <= set(summary["quantized"]), summary
    # The x86 quantizer leaves the last linear's output in float: no scale, so it stays
    # float, and says why.
    assert "quantize_per_tensor" in summary["float"]["dense_0"]
    for _ in range(3):
        xt = torch.randn(2, 3, 8, 8)
        want = quantized(xt).detach().numpy()
        got = compiled(xt.numpy())
        assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()
        assert float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)) > 0.999
