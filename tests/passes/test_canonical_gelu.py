"""GELU written as its erf formula (any grouping, a division by sqrt(2) or a product with its
inverse) becomes one ``relax.nn.gelu``; a formula with other constants stays as it is."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import lepton_compiler as lc


def _erf_model(scale_op: str, scale: float, half_first: bool) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8],
                           np.random.default_rng(0).standard_normal(64).tolist())

    def c(name: str, v: float) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, [], [v])

    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node(scale_op, ["h", "k"], ["s"]),
             helper.make_node("Erf", ["s"], ["e"]),
             helper.make_node("Add", ["one", "e"], ["a"])]
    if half_first:  # (h * 0.5) * (1 + erf)
        nodes += [helper.make_node("Mul", ["h", "half"], ["hh"]),
                  helper.make_node("Mul", ["hh", "a"], ["y"])]
    else:           # (h * (1 + erf)) * 0.5
        nodes += [helper.make_node("Mul", ["h", "a"], ["ha"]),
                  helper.make_node("Mul", ["ha", "half"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [w, c("k", scale), c("one", 1.0),
                                                     c("half", 0.5)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])\
        .SerializeToString()


@pytest.mark.parametrize("scale_op,scale,half_first,folds", [
    ("Div", 2.0 ** 0.5, False, True), ("Mul", 2.0 ** -0.5, True, True),
    ("Div", 2.0, False, False)])
def test_erf_gelu_is_one_op_only_with_its_constants(scale_op, scale, half_first, folds):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    calib = [(rng.standard_normal((4, 8)).astype(np.float32),) for _ in range(4)]
    compiled = lc.build(_erf_model(scale_op, scale, half_first), (x,), target="lepton",
                        quantize=lc.QuantConfig(calibration_data=calib))
    kinds = {o.kind for o in compiled.report.ops}
    assert ("lut" in kinds) == folds and ("float" in kinds) != folds
    if folds:
        assert np.array_equal(compiled(x), compiled.quantization.reference(x))
