"""PruneChannels: remove whole channels from an imported (NCHW, constants bound) Relax ``main``.

Before (ratio 0.5, align 16)::

    a = conv2d(x, W1[64, 3, 3, 3]);  a = batch_norm(a, g, b, m, v)[0];  a = relu(a)
    y = conv2d(a, W2[64, 64, 3, 3])

After::

    a = conv2d(x, W1[32, 3, 3, 3]);  a = batch_norm(a, g[32], b[32], m[32], v[32])[0]; ...
    y = conv2d(a, W2[64, 32, 3, 3])

Analysis: every tensor's channel axis is described by *segments* ``(space, count, block)``;
a channel space is created by each producer (conv2d with groups=1, matmul by a constant
weight) and flows through per-channel ops (bias add/multiply by per-channel constants,
batch-norm, activations, pooling, spatial mean, depthwise conv). A residual add ties the
spaces of both operands (networkx connected components give the dependency groups); concat
along the channel axis lays segments end to end; flatten ``[N,C,H,W] -> [N,C*H*W]`` turns
each channel into a block of ``H*W`` features of the next linear layer. A space that reaches
the model's outputs, or any op the analysis does not know, is pinned (not prunable).

Preconditions: constants bound at import, ``FoldConstant`` applied (reshaped biases and
transposed linear weights are constants), NCHW conv2d with OIHW weights. Reads no spec fields
(``align`` is passed in; the driver passes the spec's tile).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from lepton_compiler import tvm_compat

UNARY = {"relax.nn.relu", "relax.clip", "relax.nn.gelu", "relax.nn.silu", "relax.sigmoid",
         "relax.tanh", "relax.nn.max_pool2d", "relax.nn.avg_pool2d",
         "relax.nn.adaptive_avg_pool2d", "relax.nn.dropout", "relax.nn.leakyrelu"}
ELEMENTWISE = {"relax.add", "relax.multiply", "relax.subtract", "relax.divide"}


@dataclass
class Space:
    """One producer's output channels; members are the constants indexed by them."""

    size: int
    producer: str                       # layer name: conv2d_3, dense_1
    pinned: str = ""                    # why it cannot be pruned ("" if it can)


@dataclass
class Member:
    """A constant whose ``axis`` is indexed by a channel layout (``segs``)."""

    const: Any
    axis: int
    segs: tuple[tuple[int | None, int, int], ...]
    role: str = "follow"    # "producer" (scored), "consumer" (reads the channels), "follow"

    @property
    def producer(self) -> bool:
        return self.role == "producer"


@dataclass
class Analysis:
    """Channel spaces, the constants each indexes, and the layer names in order."""

    spaces: list[Space] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    ties: list[tuple[int, int]] = field(default_factory=list)
    layers: dict[str, Any] = field(default_factory=dict)   # layer name -> binding var
    macs: dict[str, int] = field(default_factory=dict)
    layouts: dict[Any, Any] = field(default_factory=dict)  # var -> (axis, segs) or None

    def groups(self) -> list[list[int]]:
        """Spaces that must be pruned together (residual ties), in producer order."""
        g = nx.Graph()
        g.add_nodes_from(range(len(self.spaces)))
        g.add_edges_from(self.ties)
        return sorted((sorted(c) for c in nx.connected_components(g)), key=lambda c: c[0])


def _name(op: Any) -> str:
    return getattr(op, "name", "")


def _shape(expr: Any) -> tuple[int, ...]:
    return tvm_compat.shape_of(expr.ty)


def _channel_const(const: Any, rank: int, axis: int, size: int) -> int | None:
    """The axis of ``const`` that runs along the tensor's channel axis, if it is per-channel
    (``None``: a scalar or otherwise channel-independent constant)."""
    shape = _shape(const)
    offset = rank - len(shape)
    if axis - offset < 0 or shape[axis - offset] == 1:
        return None
    return axis - offset if shape[axis - offset] == size else -1


def analyze(func: Any) -> Analysis:
    """Channel spaces, members, ties and pins of ``func`` (see the module docstring)."""
    from tvm import relax

    a = Analysis()
    info: dict[Any, Any] = {}  # var -> (axis, segs) | tuple of those | None
    counts = {"conv2d": 0, "dense": 0}

    def layer(kind: str, var: Any, macs: int) -> str:
        name = f"{kind}_{counts[kind]}"
        counts[kind] += 1
        a.layers[name], a.macs[name] = var, macs
        return name

    def new_space(name: str, size: int) -> int:
        a.spaces.append(Space(size, name))
        return len(a.spaces) - 1


    def pin(value: Any, why: str) -> None:
        if isinstance(value, tuple) and value and isinstance(value[0], int):
            for space, _, _ in value[1]:
                if space is not None and not a.spaces[space].pinned:
                    a.spaces[space].pinned = why
        elif isinstance(value, tuple):
            for v in value:
                pin(v, why)

    def get(expr: Any) -> Any:
        if isinstance(expr, relax.Var):
            return info.get(expr)
        if isinstance(expr, relax.Tuple):
            return tuple(get(f) for f in expr.fields)
        return None

    for param in func.params:
        shape = _shape(param)
        axis = 1 if len(shape) == 4 else len(shape) - 1
        info[param] = (axis, ((None, shape[axis], 1),)) if shape else None
    for block in func.body.blocks:
        for b in block.bindings:
            var, value = b.var, b.value
            info[var] = _step(a, var, value, get, pin, layer, new_space)
    pin(get(func.body.body), "it is a model output")
    a.layouts = info
    return a


def _step(a: Analysis, var: Any, value: Any, get: Any, pin: Any, layer: Any,
          new_space: Any) -> Any:
    """The channel layout of one binding's result; records members, ties and pins."""
    from tvm import relax

    if isinstance(value, relax.Var):
        return get(value)
    if isinstance(value, relax.Tuple):
        return tuple(get(f) for f in value.fields)
    if isinstance(value, relax.TupleGetItem):
        t = get(value.tuple_value)
        return t[value.index] if isinstance(t, tuple) and not isinstance(t[0], int) else None
    if not isinstance(value, relax.Call):
        return None
    op = _name(value.op)
    args = list(value.args)
    ins = [get(x) for x in args]
    rank = len(_shape(var)) if isinstance(var.ty, tvm_compat.tensor_type_class()) else 0
    if op == "relax.nn.conv2d" and tvm_compat.is_tensor_constant(args[1]) \
            and value.attrs.data_layout == "NCHW" and value.attrs.kernel_layout == "OIHW":
        w = _shape(args[1])
        groups = int(value.attrs.groups)
        n, _, ho, wo = _shape(var)
        name = layer("conv2d", var, n * w[0] * ho * wo * w[1] * w[2] * w[3])
        src = ins[0]
        if groups == 1:
            if src is not None:
                a.members.append(Member(args[1], 1, src[1], "consumer"))
            space = new_space(name, w[0])
            a.members.append(Member(args[1], 0, ((space, w[0], 1),), "producer"))
            return 1, ((space, w[0], 1),)
        if src is not None and src[0] == 1 and groups == w[0] == _shape(args[0])[1]:
            a.members.append(Member(args[1], 0, src[1]))  # depthwise: channels pass through
            return src
        space = new_space(name, w[0])
        a.spaces[space].pinned = "grouped convolution"
        pin(src, "it feeds a grouped convolution")
        return 1, ((space, w[0], 1),)
    if op == "relax.matmul" and tvm_compat.is_tensor_constant(args[1]) \
            and len(_shape(args[1])) == 2:
        k, out = _shape(args[1])
        name = layer("dense", var, int(np.prod(_shape(var))) * k)
        src = ins[0]
        if src is not None and src[0] == len(_shape(args[0])) - 1:
            a.members.append(Member(args[1], 0, src[1], "consumer"))
        else:
            pin(src, "it feeds a matmul along another axis")
        space = new_space(name, out)
        a.members.append(Member(args[1], 1, ((space, out, 1),), "producer"))
        return rank - 1, ((space, out, 1),)
    if op == "relax.nn.batch_norm" and ins[0] is not None \
            and int(value.attrs.axis) == ins[0][0] \
            and all(tvm_compat.is_tensor_constant(x) for x in args[1:]):
        for const in args[1:]:
            a.members.append(Member(const, 0, ins[0][1]))
        return ins[0], None, None
    if op in ELEMENTWISE:
        consts = [i for i, x in enumerate(args) if tvm_compat.is_tensor_constant(x)]
        tensors = [i for i in range(len(args)) if i not in consts]
        if len(tensors) == 1 and ins[tensors[0]] is not None:
            src = ins[tensors[0]]
            size = sum(n * blk for _, n, blk in src[1])
            for i in consts:
                axis = _channel_const(args[i], rank, src[0], size)
                if axis == -1:
                    pin(src, f"{op} by a constant of another shape")
                    return None
                if axis is not None:
                    a.members.append(Member(args[i], axis, src[1]))
            return src
        if len(tensors) == 2 and ins[0] is not None and ins[1] is not None \
                and _shape(args[0]) == _shape(args[1]) and ins[0][0] == ins[1][0] \
                and [n * k for _, n, k in ins[0][1]] == [n * k for _, n, k in ins[1][1]]:
            for (s0, _, _), (s1, _, _) in zip(ins[0][1], ins[1][1], strict=True):
                if (s0 is None) != (s1 is None):
                    pin(ins[0], "it is added to a fixed tensor")
                    pin(ins[1], "it is added to a fixed tensor")
                elif s0 is not None:
                    a.ties.append((s0, s1))
            return ins[0]
    if op in UNARY and ins and ins[0] is not None and len(_shape(var)) == len(_shape(args[0])):
        return ins[0]
    if op == "relax.mean" and ins[0] is not None:
        axes = sorted(int(x) % len(_shape(args[0])) for x in value.attrs.axis)
        axis = ins[0][0]
        if axis not in axes:
            keep = bool(value.attrs.keepdims)
            return (axis if keep else axis - sum(x < axis for x in axes)), ins[0][1]
    if op == "relax.reshape" and ins[0] is not None:
        src_shape, dst = _shape(args[0]), _shape(var)
        axis = ins[0][0]
        if len(src_shape) == 4 and axis == 1 and len(dst) == 2 and dst[0] == src_shape[0]:
            hw = src_shape[2] * src_shape[3]
            return 1, tuple((s, n, blk * hw) for s, n, blk in ins[0][1])
        if src_shape == dst:
            return ins[0]
    if op == "relax.concat" and isinstance(ins[0], tuple) and ins[0] \
            and all(isinstance(x, tuple) and isinstance(x[0], int) for x in ins[0]):
        axis = int(value.attrs.axis) % rank
        if all(x[0] == axis for x in ins[0]):
            return axis, tuple(s for x in ins[0] for s in x[1])
    for x in ins:
        pin(x, f"it feeds {op or 'an unsupported expression'}")
    return None


def kept_indices(segs: tuple, keep: dict[int, np.ndarray]) -> np.ndarray | None:
    """Indices kept along an axis laid out as ``segs`` (``None``: all of them)."""
    parts, offset, pruned = [], 0, False
    for space, n, block in segs:
        kept = keep.get(space) if space is not None else None
        if kept is None:
            parts.append(np.arange(offset, offset + n * block))
        else:
            pruned = True
            parts.append((offset + kept[:, None] * block + np.arange(block)).ravel())
        offset += n * block
    return np.concatenate(parts) if pruned else None


def _size(segs: tuple, keep: dict[int, np.ndarray]) -> int:
    return sum((len(keep[s]) if s in keep else n) * blk for s, n, blk in segs)


def mask(func: Any, analysis: Analysis, keep: dict[int, np.ndarray]) -> Any:
    """``func`` with the same shapes, the channels not in ``keep`` zeroed where they are read
    (conv input channels, linear input features): the oracle a pruned graph must equal."""
    from tvm import relax

    zeroed: dict[Any, np.ndarray] = {}
    for m in analysis.members:
        idx = kept_indices(m.segs, keep)
        if m.role != "consumer" or idx is None:
            continue
        data = zeroed.get(m.const, tvm_compat.constant_numpy(m.const)).copy()
        dropped = np.setdiff1d(np.arange(data.shape[m.axis]), idx)
        index = [slice(None)] * data.ndim
        index[m.axis] = dropped
        data[tuple(index)] = 0
        zeroed[m.const] = data
    consts = {c: relax.const(d, str(d.dtype)) for c, d in zeroed.items()}
    return _rebuild(func, consts, {}, {})


def rewrite(func: Any, analysis: Analysis, keep: dict[int, np.ndarray]) -> Any:
    """``func`` with the channels not in ``keep`` (space -> kept indices) removed."""
    from tvm import relax

    slices: dict[Any, list[tuple[int, np.ndarray]]] = {}
    for m in analysis.members:
        idx = kept_indices(m.segs, keep)
        if idx is not None:
            slices.setdefault(m.const, []).append((m.axis, idx))
    new_consts: dict[Any, Any] = {}
    for const, cuts in slices.items():
        data = tvm_compat.constant_numpy(const)
        for axis, idx in cuts:
            data = np.take(data, idx, axis=axis)
        new_consts[const] = relax.const(np.ascontiguousarray(data), str(data.dtype))
    return _rebuild(func, new_consts, analysis.layouts, keep)


def _rebuild(func: Any, new_consts: dict[Any, Any], info: dict[Any, Any],
             keep: dict[int, np.ndarray]) -> Any:
    """Re-emit ``func`` with constants replaced and flatten shapes resized; every binding's
    type is inferred again."""
    from tvm import relax

    bb = relax.BlockBuilder()
    outputs = _outputs(func)
    env: dict[Any, Any] = {}
    params = [relax.Var(tvm_compat.param_name(p), p.ty) for p in func.params]
    env.update(zip(func.params, params, strict=True))

    def sub(expr: Any) -> Any:
        if isinstance(expr, relax.Var):
            return env[expr]
        if tvm_compat.is_tensor_constant(expr):
            return new_consts.get(expr, expr)
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([sub(f) for f in expr.fields])
        return expr

    attrs = dict(func.attrs) if func.attrs is not None else {}
    with bb.function("main", params, attrs=attrs):
        with bb.dataflow():
            for block in func.body.blocks:
                for b in block.bindings:
                    value = b.value
                    if isinstance(value, relax.Call):
                        args = [sub(x) for x in value.args]
                        layout = info.get(b.var)
                        if _name(value.op) == "relax.reshape" and layout is not None:
                            dims = list(_shape(b.var))
                            dims[layout[0]] = _size(layout[1], keep)
                            args[1] = relax.ShapeExpr(dims)
                        if _name(value.op) == "relax.nn.conv2d" and int(value.attrs.groups) > 1:
                            value = _depthwise(value, args)
                        else:
                            value = relax.Call(value.op, args, value.attrs, value.ty_args)
                    elif isinstance(value, relax.TupleGetItem):
                        value = relax.TupleGetItem(sub(value.tuple_value), value.index)
                    else:
                        value = sub(value)
                    env[b.var] = bb.emit(value, name_hint=tvm_compat.param_name(b.var)) \
                        if b.var not in outputs else bb.emit_output(value)
            out = bb.emit_output(sub(func.body.body)) if func.body.body not in env else None
        bb.emit_func_output(env[func.body.body] if out is None else out)
    return bb.get()["main"]


def _depthwise(call: Any, args: list) -> Any:
    """A grouped conv2d on pruned operands: one group per remaining channel."""
    from tvm import relax

    at = call.attrs
    groups = int(at.groups)
    if groups == _shape(call.args[1])[0]:  # depthwise: groups follow the channels
        groups = _shape(args[1])[0]
    return relax.op.nn.conv2d(args[0], args[1], strides=at.strides, padding=at.padding,
                              dilation=at.dilation, groups=groups,
                              data_layout=at.data_layout, kernel_layout=at.kernel_layout,
                              out_layout=at.out_layout, out_dtype=at.out_dtype)


def _outputs(func: Any) -> set:
    from tvm import relax

    return {b.var for block in func.body.blocks for b in block.bindings
            if not isinstance(b.var, relax.DataflowVar)}
