"""PropagateNaN: Before/Expected, nothing-matches, and NaN through every clamp vs onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import lepton_compiler as lc
from lepton_compiler.passes.nan_semantics import PropagateNaN


def _module(body):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def test_relu_and_clip_become_selects():
    before = _module(lambda bb, x: bb.emit(relax.op.clip(relax.op.nn.relu(x), 0.0, 6.0)))

    def expected_body(bb, x):
        zero = relax.const(0.0, "float32")
        below = bb.emit(relax.op.less(x, zero))
        relu = bb.emit(relax.op.where(below, zero, x))
        above = bb.emit(relax.op.greater(relu, relax.const(6.0, "float32")))
        capped = bb.emit(relax.op.where(above, relax.const(6.0, "float32"), relu))
        below2 = bb.emit(relax.op.less(relu, zero))
        return bb.emit(relax.op.where(below2, zero, capped))

    tvm.ir.assert_structural_equal(PropagateNaN()(before), _module(expected_body))


def test_nothing_to_rewrite_leaves_the_module_unchanged():
    before = _module(lambda bb, x: bb.emit(relax.op.add(x, x)))
    tvm.ir.assert_structural_equal(PropagateNaN()(before), before)
    assert PropagateNaN().info.name == "lepton.PropagateNaN"


def _one_op(op, inits=(), **attrs):
    names = ["x", *[name for name, _ in inits]]
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=10).SerializeToString()


@pytest.mark.parametrize("op, inits, attrs", [
    ("Relu", (), {}),
    ("Clip", (("lo", -1.0), ("hi", 1.0)), {}),
    ("Elu", (), {}),
    ("HardSigmoid", (), {}),
])
def test_nan_and_inf_pass_through_clamps_like_onnxruntime(op, inits, attrs):
    model = _one_op(op, inits, **attrs)
    compiled = lc.build(model)
    oracle = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    x[0, 1], x[1, 2], x[1, 5] = np.nan, np.inf, -np.inf
    got, want = compiled(x), oracle.run(None, {"x": x})[0]
    assert np.isnan(got[0, 1]) and np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=1e-6, atol=1e-6)


def test_a_max_pool_window_holding_nan_gives_nan_like_pytorch():
    import torch

    model = torch.nn.MaxPool2d(2).eval()
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)
    x[0, 0, 0, 0] = x[0, 1, 3, 3] = x[0, 2, 5, 4] = np.nan  # first, last, middle of a window
    compiled = lc.build(model, (torch.from_numpy(x),))
    want = model(torch.from_numpy(x)).numpy()
    got = compiled(x)
    assert np.isnan(want).sum() == 3 and np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.nan_to_num(got), np.nan_to_num(want))


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_elementwise_max_and_min_with_a_nan_operand_give_nan_like_onnxruntime(op):
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 8]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=10).SerializeToString()
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((2, 8)).astype(np.float32) for _ in range(2))
    a[0, 1] = b[0, 2] = a[1, 3] = b[1, 3] = np.nan
    b[1, 6] = np.inf
    got = lc.build(model)(a, b)
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"a": a, "b": b})[0]
    assert np.isnan(want).sum() == 3 and np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.nan_to_num(got), np.nan_to_num(want))


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_a_max_or_min_reduction_over_nan_gives_nan_like_onnx_reference(op):
    from onnx.reference import ReferenceEvaluator

    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], axes=[2, 3], keepdims=0)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=10)
    x = np.random.default_rng(3).standard_normal((1, 4, 5, 5)).astype(np.float32)
    x[0, 0, 0, 0] = x[0, 2, 4, 4] = x[0, 3, 2, 1] = np.nan
    got = lc.build(model.SerializeToString())(x)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert np.isnan(want).sum() == 3 and np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.nan_to_num(got), np.nan_to_num(want))
