"""ONNX importers Lepton replaces: LayerNormalization's Mean and InvStdDev outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import lepton_compiler as lc
from lepton_compiler.errors import ModelLoadError


def _layer_norm(shape, axis, opset, bias=True, dtype=TensorProto.FLOAT, outputs=3):
    names = ["Y", "Mean", "InvStdDev"][:outputs]
    norm_shape = list(shape[axis % len(shape):])
    stat_shape = [d if i < axis % len(shape) else 1 for i, d in enumerate(shape)]
    rng = np.random.default_rng(len(shape) * 10 + axis)
    inits = [helper.make_tensor("scale", dtype, norm_shape,
                                rng.standard_normal(norm_shape).astype(np.float32).ravel())]
    inputs = ["X", "scale"]
    if bias:
        inits.append(helper.make_tensor("bias", dtype, norm_shape,
                                        rng.standard_normal(norm_shape).astype(np.float32).ravel()))
        inputs.append("bias")
    node = helper.make_node("LayerNormalization", inputs, names, axis=axis, epsilon=1e-3,
                            name="ln")
    outs = [helper.make_tensor_value_info("Y", dtype, list(shape))] + [  # stash type: float32
        helper.make_tensor_value_info(n, TensorProto.FLOAT, stat_shape) for n in names[1:]]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", dtype,
                                                                          list(shape))],
                              outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("shape, axis, opset, bias", [
    ((3, 4), -1, 17, True),
    ((2, 3, 5), 1, 18, True),
    ((2, 3, 5), 0, 17, False),
    ((2, 3, 4, 5), -2, 18, False),
])
def test_layer_norm_statistics_match_the_onnx_reference(shape, axis, opset, bias):
    model = _layer_norm(shape, axis, opset, bias)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 3 + 1
    expected = ReferenceEvaluator(model).run(None, {"X": x})
    got = lc.build(model, (x,), target="host")(x)
    assert len(got) == 3
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_layer_norm_without_statistics_is_left_to_the_importer():
    model = _layer_norm((2, 6), -1, 17, outputs=1)
    x = np.random.default_rng(2).standard_normal((2, 6)).astype(np.float32)
    expected = ReferenceEvaluator(model).run(None, {"X": x})[0]
    np.testing.assert_allclose(lc.build(model, (x,), target="host")(x), expected,
                               rtol=1e-5, atol=1e-5)


def test_layer_norm_statistics_of_a_float16_input_are_refused_naming_the_node():
    model = _layer_norm((2, 6), -1, 17, dtype=TensorProto.FLOAT16)
    onnx.checker.check_model(model)
    x = np.zeros((2, 6), np.float16)
    with pytest.raises(ModelLoadError, match=r"node ln \(LayerNormalization\).*float32"):
        lc.build(model, (x,), target="host")
