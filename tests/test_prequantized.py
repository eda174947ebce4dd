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


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    torch.manual_seed(0)
    model = _Residual().eval()
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((BATCH, 3, 8, 8)).astype(np.float32) for _ in range(6)]
    path = tmp_path_factory.mktemp("qdq") / "float.onnx"
    path.write_bytes(to_onnx_bytes(model, (torch.from_numpy(samples[0]),)))
    return path, samples


def _quantize(path, samples, activations):
    name = ort.InferenceSession(str(path)).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: s} for s in samples[:4]])

        def get_next(self):
            return next(self.it, None)

    dst = path.with_name(f"qdq-{activations}.onnx")
    quantize_static(str(path), str(dst), Reader(), quant_format=QuantFormat.QDQ,
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
