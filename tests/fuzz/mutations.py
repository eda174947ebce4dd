"""Seeded structural mutations of valid ONNX models: each returns the mutated model bytes,
its kind, and the node the fault is in (``None`` for file-, tensor- or graph-level faults)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

Mutation = Callable[[onnx.ModelProto, random.Random], "tuple[bytes, str | None]"]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _users(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def attr_type(model, rng):
    """An attribute of the wrong type (int ↔ float ↔ string ↔ ints)."""
    nodes = [n for n in model.graph.node if n.attribute]
    node = rng.choice(nodes)
    attr = rng.choice(list(node.attribute))
    name = attr.name
    node.attribute.remove(attr)
    choices = {AttributeProto.INT: [1.5, "x", [1, 2]], AttributeProto.INTS: [2.5, "x", 3],
               AttributeProto.FLOAT: [3, "x", [1.0]], AttributeProto.STRING: [1, 2.0]}
    node.attribute.append(helper.make_attribute(name, rng.choice(
        choices.get(attr.type, [1.5]))))
    return model.SerializeToString(), node.name


def attr_value(model, rng):
    """An attribute value out of range: zero/negative strides, kernel sizes, pads, group,
    axis beyond the rank."""
    nodes = [n for n in model.graph.node if n.attribute]
    node = rng.choice(nodes)
    attr = rng.choice(list(node.attribute))
    if attr.type == AttributeProto.INTS and attr.ints:
        attr.ints[rng.randrange(len(attr.ints))] = rng.choice([0, -1, -7, 1 << 40])
    elif attr.type == AttributeProto.INT:
        attr.i = rng.choice([-9, 9, 0, 1 << 40])
    elif attr.type == AttributeProto.FLOAT:
        attr.f = rng.choice([float("nan"), -1.0, float("inf")])
    return model.SerializeToString(), node.name


def dangling_input(model, rng):
    node = rng.choice(list(model.graph.node))
    node.input[rng.randrange(len(node.input))] = f"ghost_{rng.randrange(100)}"
    return model.SerializeToString(), node.name


def drop_input(model, rng):
    """A required input or attribute removed."""
    node = rng.choice([n for n in model.graph.node if len(n.input) > 1 or n.attribute])
    if len(node.input) > 1 and (not node.attribute or rng.random() < 0.5):
        del node.input[rng.randrange(len(node.input))]
    else:
        del node.attribute[rng.randrange(len(node.attribute))]
    return model.SerializeToString(), node.name


def _reshape_initializer(model, rng, dims_fn):
    tensor = rng.choice([t for t in model.graph.initializer if t.dims])
    users = _users(model, tensor.name)
    dims = dims_fn(list(tensor.dims), rng)
    old = numpy_helper.to_array(tensor)
    new = numpy_helper.from_array(np.resize(old, [max(d, 0) for d in dims]).astype(old.dtype),
                                  tensor.name)
    tensor.CopyFrom(new)
    return model.SerializeToString(), users[0].name if users else None


def shape_mismatch(model, rng):
    """A weight's dimension changed (data kept consistent with the new shape)."""
    def fn(dims, rng):
        i = rng.randrange(len(dims))
        dims[i] = max(1, dims[i] + rng.choice([-1, 1, 2]))
        return dims
    return _reshape_initializer(model, rng, fn)


def rank_mismatch(model, rng):
    def fn(dims, rng):
        return dims[1:] if len(dims) > 1 and rng.random() < 0.5 else [1, *dims]
    return _reshape_initializer(model, rng, fn)


def bad_dims(model, rng):
    """Zero, negative or huge declared dimensions on an input or an initializer (the stored
    data left as it was)."""
    value = rng.choice([-1, 0, -5, 1 << 31, 1 << 62])
    if rng.random() < 0.5:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[rng.randrange(len(dims))].dim_value = value
    else:
        tensor = rng.choice(list(model.graph.initializer))
        if tensor.dims:
            tensor.dims[rng.randrange(len(tensor.dims))] = value
    return model.SerializeToString(), None


def div_zero_shape(model, rng):
    """A Reshape whose target makes shape inference divide by zero (a 0 with -1), or an
    impossible element count."""
    g = model.graph
    x = g.input[0]
    shape = rng.choice([[0, -1], [-1, 0], [7, -1], [-1, -1]])
    const = numpy_helper.from_array(np.array(shape, np.int64), "fuzz_shape")
    g.initializer.append(const)
    node = helper.make_node("Reshape", [x.name, "fuzz_shape"], ["fuzz_reshaped"],
                            name="fuzz_reshape", allowzero=rng.choice([0, 1]))
    relu = helper.make_node("Relu", ["fuzz_reshaped"], ["fuzz_out"], name="fuzz_relu")
    g.node.insert(0, node)
    g.node.insert(1, relu)
    g.output.append(helper.make_tensor_value_info("fuzz_out", TensorProto.FLOAT,
                                                  [f"d{i}" for i in range(len(shape))]))
    return model.SerializeToString(), "fuzz_reshape"


def bad_dtype(model, rng):
    """An unsupported or inconsistent element type on an initializer or input."""
    if rng.random() < 0.5:
        tensor = rng.choice(list(model.graph.initializer))
        tensor.data_type = rng.choice([8, 14, 15, 9, 2, 0])
        users = _users(model, tensor.name)
        return model.SerializeToString(), users[0].name if users else None
    model.graph.input[0].type.tensor_type.elem_type = rng.choice([8, 14, 7, 6, 10, 0])
    return model.SerializeToString(), None


def cycle(model, rng):
    """A node reads a value produced later (reordered nodes or a back edge)."""
    nodes = list(model.graph.node)
    i, j = sorted(rng.sample(range(len(nodes)), 2))
    if rng.random() < 0.5:
        nodes[i].input[0] = nodes[j].output[0]
        culprit = nodes[i].name
    else:
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(nodes[i])
        b.CopyFrom(nodes[j])
        model.graph.node[i].CopyFrom(b)
        model.graph.node[j].CopyFrom(a)
        culprit = None  # which node is reported depends on the data flow
    return model.SerializeToString(), culprit


def duplicate_name(model, rng):
    nodes = list(model.graph.node)
    i, j = sorted(rng.sample(range(len(nodes)), 2))
    nodes[j].output[0] = nodes[i].output[0]
    return model.SerializeToString(), nodes[j].name


def op_swap(model, rng):
    """A node's op type replaced: by an unknown op, or by another real op."""
    node = rng.choice(list(model.graph.node))
    node.op_type = rng.choice(["Frobnicate", "Relu", "Sigmoid", "Conv", "Softmax", "Add",
                               "MatMul", "LRN", "Reshape"])
    return model.SerializeToString(), node.name


def truncate(model, rng):
    data = model.SerializeToString()
    return data[:rng.randrange(1, len(data))], None


def bit_flip(model, rng):
    data = bytearray(model.SerializeToString())
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data), None


MUTATIONS: dict[str, Mutation] = {
    f.__name__: f for f in (attr_type, attr_value, dangling_input, drop_input, shape_mismatch,
                            rank_mismatch, bad_dims, div_zero_shape, bad_dtype, cycle,
                            duplicate_name, op_swap, truncate, bit_flip)
}


def cases(corpus: dict[str, onnx.ModelProto], count: int, seed: int):
    """``count`` mutated models: (case id, bytes, mutation, source model, faulty node)."""
    rng = random.Random(seed)
    names = sorted(corpus)
    kinds = sorted(MUTATIONS)
    for i in range(count):
        kind = kinds[i % len(kinds)]
        source = rng.choice(names)
        data, node = MUTATIONS[kind](_copy(corpus[source]), rng)
        yield f"{seed}-{i}", data, kind, source, node
