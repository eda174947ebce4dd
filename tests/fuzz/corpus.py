"""A corpus of small valid ONNX models (named nodes, static shapes) to mutate."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 10  # what the onnxruntime oracle accepts


def _model(name: str, nodes: list, inputs: list, outputs: list, inits: dict) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def corpus(seed: int = 0) -> dict[str, onnx.ModelProto]:
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    n = helper.make_node
    return {
        "conv_relu_pool": _model(
            "conv_relu_pool",
            [n("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             n("Relu", ["c0"], ["r0"], name="relu0"),
             n("MaxPool", ["r0"], ["p0"], name="pool0", kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["p0", "w1"], ["y"], name="conv1", strides=[1, 1])],
            [("x", [1, 3, 8, 8])], [("y", [1, 4, 2, 2])],
            {"w0": w(8, 3, 3, 3), "b0": w(8), "w1": w(4, 8, 3, 3)}),
        "mlp": _model(
            "mlp",
            [n("MatMul", ["x", "w0"], ["m0"], name="matmul0"),
             n("Add", ["m0", "b0"], ["a0"], name="add0"),
             n("Sigmoid", ["a0"], ["s0"], name="sigmoid0"),
             n("Gemm", ["s0", "w1", "b1"], ["g1"], name="gemm1", transB=1),
             n("Softmax", ["g1"], ["y"], name="softmax1", axis=-1)],
            [("x", [2, 16])], [("y", [2, 5])],
            {"w0": w(16, 12), "b0": w(12), "w1": w(5, 12), "b1": w(5)}),
        "residual": _model(
            "residual",
            [n("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             n("BatchNormalization", ["c0", "g", "beta", "mu", "var"], ["bn"], name="bn0"),
             n("Add", ["bn", "x"], ["a0"], name="add0"),
             n("Relu", ["a0"], ["r0"], name="relu0"),
             n("GlobalAveragePool", ["r0"], ["gp"], name="gap0"),
             n("Flatten", ["gp"], ["y"], name="flatten0")],
            [("x", [1, 4, 6, 6])], [("y", [1, 4])],
            {"w0": w(4, 4, 3, 3), "g": w(4) + 1, "beta": w(4),
             "mu": w(4), "var": np.abs(w(4)) + 0.5}),
        "shapes": _model(
            "shapes",
            [n("Reshape", ["x", "shape0"], ["r0"], name="reshape0"),
             n("Transpose", ["r0"], ["t0"], name="transpose0", perm=[0, 2, 1]),
             n("Concat", ["t0", "t0"], ["c0"], name="concat0", axis=1),
             n("Slice", ["c0", "starts", "ends", "axes"], ["s0"], name="slice0"),
             n("ReduceMean", ["s0"], ["y"], name="reduce0", axes=[1], keepdims=0)],
            [("x", [2, 24])], [("y", [2, 6])],
            {"shape0": np.array([2, 6, 4], np.int64), "starts": np.array([1], np.int64),
             "ends": np.array([9], np.int64), "axes": np.array([1], np.int64)}),
        "norm_act": _model(
            "norm_act",
            [n("LayerNormalization", ["x", "g", "b"], ["l0"], name="ln0", axis=-1),
             n("Mul", ["l0", "s"], ["m0"], name="mul0"),
             n("Tanh", ["m0"], ["t0"], name="tanh0"),
             n("AveragePool", ["t0"], ["y"], name="avgpool0", kernel_shape=[2],
               strides=[2])],
            [("x", [1, 3, 8])], [("y", [1, 3, 4])],
            {"g": w(8) + 1, "b": w(8), "s": w(1, 3, 8)}),
    }
