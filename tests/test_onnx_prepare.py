"""ONNX preparation before import: Ifs on shape tests, shape subgraphs, function bodies."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import lepton_compiler as lc
from lepton_compiler.frontend import onnx_prepare


def _if_on_batch_size(batch_test: int) -> onnx.ModelProto:
    """y = x * 2 when x's batch size equals ``batch_test``, else x + 1 (an exporter-style If
    on a shape test, with branch-local values and a branch initializer)."""
    info = helper.make_tensor_value_info
    then = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Relu", ["t"], ["out"])],
        "then", [], [info("out", TensorProto.FLOAT, None)],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    other = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["t"]), helper.make_node("Neg", ["t"], ["out"])],
        "else", [], [info("out", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Equal", ["batch", "test"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other,
                         name="branch"),
    ]
    graph = helper.make_graph(
        nodes, "g", [info("x", TensorProto.FLOAT, ["batch", 3])],
        [info("y", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor("zero", TensorProto.INT64, [], [0]),
         helper.make_tensor("test", TensorProto.INT64, [], [batch_test]),
         helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("batch_test", [2, 5])
def test_an_if_on_a_shape_test_compiles_as_the_branch_it_takes(batch_test):
    model = _if_on_batch_size(batch_test)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    inlined = onnx_prepare.fold_constants(onnx_prepare.with_input_shapes(model,
                                                                         {"x": [2, 3]}))
    assert "If" not in [n.op_type for n in inlined.graph.node]
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(lc.build(model, (x,))(x), want)


def test_function_bodies_of_other_opsets_are_used_only_when_their_ops_mean_the_same():
    """A body written for opset 13 whose ReduceMean takes axes as an attribute must not be
    read at opset 18 (axes became an input); one whose ops only gained types may."""
    function = onnx.FunctionProto()
    function.opset_import.extend([helper.make_opsetid("", 13)])
    function.node.extend([helper.make_node("ReduceMean", ["X"], ["Y"], axes=[1])])
    assert onnx_prepare._same_meaning(function, 13)
    assert not onnx_prepare._same_meaning(function, 18)
    function.node[0].CopyFrom(helper.make_node("Relu", ["X"], ["Y"]))
    assert onnx_prepare._same_meaning(function, 18)  # Relu 14 only added types
