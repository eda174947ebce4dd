"""Seeded random valid ONNX graphs for differential testing against onnxruntime.

Each model holds several independent random graphs (disjoint inputs and outputs), so one
compilation checks them all; every graph is compared on its own outputs. Shapes are tracked
as the graph grows, so every graph is valid by construction (the checker confirms it).
"""

from __future__ import annotations

import random

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .corpus import IR_VERSION, OPSET


class _Graph:
    def __init__(self, rng: random.Random, prefix: str) -> None:
        self.rng = rng
        self.np = np.random.default_rng(rng.randrange(1 << 30))
        self.prefix = prefix
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{self.prefix}{kind}{self.count}"

    def const(self, array: np.ndarray) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, *shape: int, scale: float = 0.4) -> str:
        return self.const((self.np.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name("t")
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op.lower()),
                                           **attrs))
        return out


def _image_op(g: _Graph, x: str, shape: list[int]) -> tuple[str, list[int]]:
    n, c, h, w = shape
    r = g.rng
    op = r.choice(["conv", "conv", "dwconv", "maxpool", "avgpool", "bn", "act", "act",
                   "add", "mul", "concat", "slice", "transpose2d"])
    if op in ("conv", "dwconv"):
        k = r.choice([1, 3]) if h >= 3 and w >= 3 else 1
        stride = r.choice([1, 1, 2]) if min(h, w) > 4 else 1
        pad = k // 2 if r.random() < 0.7 else 0
        group = c if op == "dwconv" else 1
        cout = c if op == "dwconv" else r.choice([4, 8, 12, 16])
        ins = [x, g.weight(cout, c // group, k, k)]
        if r.random() < 0.7:
            ins.append(g.weight(cout))
        y = g.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride],
                   pads=[pad] * 4, group=group)
        ho = (h + 2 * pad - k) // stride + 1
        wo = (w + 2 * pad - k) // stride + 1
        return y, [n, cout, ho, wo]
    if op in ("maxpool", "avgpool") and min(h, w) >= 2:
        y = g.node("MaxPool" if op == "maxpool" else "AveragePool", [x],
                   kernel_shape=[2, 2], strides=[2, 2])
        return y, [n, c, h // 2, w // 2]
    if op == "bn":
        var = np.abs(g.np.standard_normal(c)).astype(np.float32) + 0.5
        y = g.node("BatchNormalization", [x, g.weight(c, scale=0.2), g.weight(c), g.weight(c),
                                          g.const(var)], epsilon=1e-5)
        return y, shape
    if op == "add":
        other = g.weight(*([1, c, 1, 1] if r.random() < 0.5 else [1, c, h, w]))
        return g.node("Add", [x, other]), shape
    if op == "mul":
        return g.node("Mul", [x, g.weight(1, c, 1, 1)]), shape
    if op == "concat":
        other = g.node("Relu", [x])
        return g.node("Concat", [x, other], axis=1), [n, 2 * c, h, w]
    if op == "slice" and c > 2:
        lo = r.randrange(c - 1)
        hi = r.randrange(lo + 1, c + 1)
        y = g.node("Slice", [x, g.const(np.array([lo], np.int64)),
                             g.const(np.array([hi], np.int64)),
                             g.const(np.array([1], np.int64))])
        return y, [n, hi - lo, h, w]
    if op == "transpose2d":
        return g.node("Transpose", [x], perm=[0, 1, 3, 2]), [n, c, w, h]
    return _act(g, x), shape


def _act(g: _Graph, x: str) -> str:
    op = g.rng.choice(["Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "Softplus", "Abs",
                       "Neg", "Elu", "HardSigmoid"])
    if op == "Clip":
        return g.node("Clip", [x, g.const(np.array(0.0, np.float32)),
                               g.const(np.array(6.0, np.float32))])
    if op == "LeakyRelu":
        return g.node(op, [x], alpha=0.1)
    return g.node(op, [x])


def _to_matrix(g: _Graph, x: str, shape: list[int]) -> tuple[str, list[int]]:
    r = g.rng
    choice = r.choice(["gap", "flatten", "reduce"])
    n, c, h, w = shape
    if choice == "gap":
        y = g.node("GlobalAveragePool", [x])
        return g.node("Flatten", [y]), [n, c]
    if choice == "reduce":
        op = r.choice(["ReduceMean", "ReduceMax", "ReduceSum"])
        if op == "ReduceSum":
            y = g.node(op, [x, g.const(np.array([2, 3], np.int64))], keepdims=0)
        else:
            y = g.node(op, [x], axes=[2, 3], keepdims=0)
        return y, [n, c]
    y = g.node("Reshape", [x, g.const(np.array([n, c * h * w], np.int64))])
    return y, [n, c * h * w]


def _matrix_op(g: _Graph, x: str, shape: list[int]) -> tuple[str, list[int]]:
    n, d = shape
    r = g.rng
    op = r.choice(["matmul", "gemm", "act", "softmax", "layernorm", "add", "div",
                   "transpose", "reshape3"])
    if op == "matmul":
        k = r.choice([4, 8, 16, 24])
        return g.node("MatMul", [x, g.weight(d, k)]), [n, k]
    if op == "gemm":
        k = r.choice([4, 8, 16])
        return g.node("Gemm", [x, g.weight(k, d), g.weight(k)], transB=1), [n, k]
    if op == "softmax":
        return g.node("Softmax", [x], axis=-1), shape
    if op == "layernorm":
        return g.node("LayerNormalization", [x, g.weight(d), g.weight(d)], axis=-1,
                      epsilon=1e-5), shape
    if op == "add":
        return g.node("Add", [x, g.weight(d)]), shape
    if op == "div":
        divisor = (np.abs(g.np.standard_normal(d)) + 0.5).astype(np.float32)
        return g.node("Div", [x, g.const(divisor)]), shape
    if op == "transpose":
        t = g.node("Transpose", [x], perm=[1, 0])
        return g.node("Transpose", [_act(g, t)], perm=[1, 0]), shape
    if op == "reshape3" and d % 2 == 0:
        y = g.node("Reshape", [x, g.const(np.array([n, 2, d // 2], np.int64))])
        y = g.node("ReduceMean", [y], axes=[1], keepdims=0)
        return y, [n, d // 2]
    return _act(g, x), shape


def random_graph(rng: random.Random, prefix: str) -> tuple[list, list, list, list]:
    """(nodes, initializers, inputs, outputs) of one random graph."""
    g = _Graph(rng, prefix)
    x_name = f"{prefix}x"
    if rng.random() < 0.6:
        shape = [1, rng.choice([1, 3, 4, 8]), rng.randint(4, 12), rng.randint(4, 12)]
        x, cur = x_name, list(shape)
        for _ in range(rng.randint(1, 5)):
            x, cur = _image_op(g, x, cur)
        if rng.random() < 0.5:
            x, cur = _to_matrix(g, x, cur)
            for _ in range(rng.randint(0, 3)):
                x, cur = _matrix_op(g, x, cur)
    else:
        shape = [rng.choice([1, 2, 4]), rng.choice([8, 16, 32])]
        x, cur = x_name, list(shape)
        for _ in range(rng.randint(1, 6)):
            x, cur = _matrix_op(g, x, cur)
    if x == x_name:
        x = _act(g, x)
    inputs = [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, shape)]
    outputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, cur)]
    return g.nodes, g.inits, inputs, outputs


def random_model(seed: int, graphs: int = 5) -> tuple[bytes, list[list[str]]]:
    """A model of ``graphs`` independent random graphs; returns its bytes and, per graph,
    its output names."""
    return _assemble(seed, graphs, random_graph)


def _int8_graph(rng: random.Random, prefix: str) -> tuple[list, list, list, list]:
    """A random graph of the operators with integer kernels: conv (dense or depthwise) with
    bias, ReLU/ReLU6, max pooling, residual adds, global average pooling, linear layers."""
    g = _Graph(rng, prefix)
    x_name = f"{prefix}x"
    shape = [1, rng.choice([3, 4, 8]), rng.randint(6, 12), rng.randint(6, 12)]
    x, (n, c, h, w) = x_name, shape
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["conv", "conv", "residual", "dwconv", "maxpool"])
        if op == "maxpool" and min(h, w) >= 4:
            x, h, w = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), h // 2, w // 2
            continue
        if op == "residual":
            y = g.node("Conv", [x, g.weight(c, c, 3, 3, scale=0.2), g.weight(c)],
                       kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            x = g.node("Relu", [g.node("Add", [y, x])])
            continue
        group = c if op == "dwconv" else 1
        cout = c if op == "dwconv" else rng.choice([4, 8, 16])
        k = rng.choice([1, 3])
        stride = rng.choice([1, 2]) if min(h, w) >= 6 else 1
        y = g.node("Conv", [x, g.weight(cout, c // group, k, k), g.weight(cout)],
                   kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
                   group=group)
        act = rng.choice(["relu", "relu6", "none"])
        if act == "relu":
            y = g.node("Relu", [y])
        elif act == "relu6":
            y = g.node("Clip", [y, g.const(np.array(0.0, np.float32)),
                                g.const(np.array(6.0, np.float32))])
        x, c = y, cout
        h, w = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
    cur = [n, c, h, w]
    if rng.random() < 0.6:
        x = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
        d = c
        for _ in range(rng.randint(0, 2)):
            k = rng.choice([8, 16, 10])
            x = g.node("Gemm", [x, g.weight(k, d), g.weight(k)], transB=1)
            if rng.random() < 0.5:
                x = g.node("Relu", [x])
            d = k
        cur = [n, d]
    inputs = [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, shape)]
    outputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, cur)]
    return g.nodes, g.inits, inputs, outputs


def random_int8_model(seed: int, graphs: int = 3) -> tuple[bytes, list[list[str]]]:
    """Like :func:`random_model`, from the operators with integer kernels only."""
    return _assemble(seed, graphs, _int8_graph)


def _assemble(seed: int, graphs: int, make) -> tuple[bytes, list[list[str]]]:
    rng = random.Random(seed)
    nodes, inits, inputs, outputs, per_graph = [], [], [], [], []
    for i in range(graphs):
        n, c, ins, outs = make(rng, f"g{i}_")
        nodes += n
        inits += c
        inputs += ins
        outputs += outs
        per_graph.append([o.name for o in outs])
    graph = helper.make_graph(nodes, f"random{seed}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(), per_graph
