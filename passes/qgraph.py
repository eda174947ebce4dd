"""The layer graph that quantization works on, read from a simplified, NHWC Relax ``main``.

Relax bindings are grouped into layers the integer rewrite handles as one unit — the first
registered layer kind (``passes/layers/``) whose pattern matches starts a layer, which absorbs
a following bias add and ReLU/ReLU6 where the kind says so — and every other binding becomes
a ``float`` layer that keeps its Relax expression. Layers get stable names (``conv2d_0``,
``dense_1``, ``add_0``, ``softmax_0``...) that calibration tables, ``skip``/``overrides``
and the reports use. Tensors are named after the layer that produces them (graph inputs keep
their own names).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler import tvm_compat
from lepton_compiler.errors import CompileError
from lepton_compiler.passes.layers import REGISTRY, candidates
from lepton_compiler.passes.layers.base import (
    Layer,
    LayerGraph,
    MatchContext,
    QParams,
    Tensor,
    const,
    is_const,
    prim,
)

#: Kinds with their own output range (``conv2d``, ``dense``, ``matmul``, ``add``...).
COMPUTE_KINDS = tuple(n for n, k in REGISTRY.items() if k.compute)


def _op_name(expr: Any) -> str:
    from tvm import relax

    if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
        return str(expr.op.name)
    return type(expr).__name__


def _short(op: str) -> str:
    return op.split(".")[-1]


def _is_tensor(ty: Any) -> bool:
    return isinstance(ty, tvm_compat.tensor_type_class())


def read_graph(func: Any) -> LayerGraph:
    """Group the bindings of ``func`` (a simplified NHWC Relax main) into layers."""
    from tvm import relax

    bindings = [b for block in func.body.blocks for b in block.bindings]
    uses: dict[Any, int] = {}

    def count(expr: Any) -> None:
        relax.analysis.post_order_visit(
            expr, lambda e: uses.__setitem__(e, uses.get(e, 0) + 1)
            if isinstance(e, relax.Var) else None)

    for b in bindings:
        count(b.value)
    count(func.body.body)
    consumer: dict[Any, Any] = {}
    for b in bindings:
        relax.analysis.post_order_visit(
            b.value, lambda e, b=b: consumer.setdefault(e, b) if isinstance(e, relax.Var)
            else None)

    tensors: dict[str, Tensor] = {}
    names: dict[Any, str] = {}        # relax var -> tensor name
    params = list(func.params)
    inputs = []
    for p in params:
        name = tvm_compat.param_name(p)
        names[p] = name
        tensors[name] = Tensor(name, tvm_compat.shape_of(p.ty), tvm_compat.dtype_of(p.ty))
        inputs.append(name)

    counters: dict[str, int] = {}
    layers: list[Layer] = []
    absorbed: set[int] = set()
    index_of = {id(b): i for i, b in enumerate(bindings)}  # bindings list is alive here

    def new_name(kind: str) -> str:
        n = counters.get(kind, 0)
        counters[kind] = n + 1
        return f"{kind}_{n}"

    def sole_next(var: Any) -> Any:
        """The binding that is the only use of ``var``, if any."""
        if uses.get(var, 0) != 1 or var not in consumer:
            return None
        return consumer[var]

    group: list[tuple[Any, Any]] = []

    def absorb_bias(var: Any, channels: int) -> tuple[Any, np.ndarray | None]:
        nxt = sole_next(var)
        if nxt is None or _op_name(nxt.value) != "relax.add":
            return var, None
        a, b = nxt.value.args
        const_expr = b if a.same_as(var) else a if b.same_as(var) else None
        if const_expr is None or not is_const(const_expr):
            return var, None
        values = const(const_expr)
        if values.size != channels or values.shape[-1] != channels:
            return var, None
        absorbed.add(index_of[id(nxt)])
        group.append((nxt.var, nxt.value))
        return nxt.var, values.reshape(channels).astype(np.float64)

    def absorb_act(var: Any) -> tuple[Any, str | None]:
        nxt = sole_next(var)
        if nxt is None:
            return var, None
        op = _op_name(nxt.value)
        act = None
        if op == "relax.nn.relu":
            act = "relu"
        elif op == "relax.clip":
            lo, hi = (prim(a) for a in nxt.value.args[1:3])
            if lo == 0.0 and hi == 6.0:
                act = "relu6"
        if act is None:
            return var, None
        absorbed.add(index_of[id(nxt)])
        group.append((nxt.var, nxt.value))
        return nxt.var, act

    users: dict[Any, list[Any]] = {}
    for b in bindings:
        relax.analysis.post_order_visit(
            b.value, lambda e, b=b: users.setdefault(e, []).append(b.value)
            if isinstance(e, relax.Var) else None)
    fixed: dict[str, QParams] = {}
    quantized_by: dict[Any, tuple[Any, QParams]] = {}  # quantize var -> (source, qparams)

    for i, b in enumerate(bindings):
        if i in absorbed:
            continue
        value, var = b.value, b.var
        op = _op_name(value)
        # A pre-quantized model's QuantizeLinear -> DequantizeLinear pairs (per tensor, same
        # scale and zero point) are the quantization of the tensor they wrap: they vanish
        # from the layer graph, and the tensor keeps that quantization (``fixed``).
        if op == "relax.quantize" and isinstance(value.args[0], relax.Var) and \
                value.args[0] in names:
            qp = _per_tensor_qparams(value, tvm_compat.dtype_of(var.ty))
            readers = users.get(var, [])
            if qp is not None and readers and len(readers) == uses.get(var, 0) and all(
                    _op_name(r) == "relax.dequantize" and
                    _per_tensor_qparams(r, tvm_compat.dtype_of(var.ty)) == qp
                    for r in readers):
                quantized_by[var] = (value.args[0], qp)
                continue
        if op == "relax.dequantize" and value.args[0] in quantized_by:
            source, qp = quantized_by[value.args[0]]
            names[var] = names[source]
            fixed.setdefault(names[source], qp)
            continue
        group = [(var, value)]
        layer = _match(value, op, MatchContext(names, tensors))
        kind = REGISTRY.get(layer.kind) if layer is not None else None
        if kind is not None and kind.absorbs_bias:
            var, layer.bias = absorb_bias(var, layer.weight.shape[-1])
        if kind is not None and kind.absorbs_act:
            var, layer.act = absorb_act(var)
        if layer is None:
            layer = Layer("", "float", [], "", op=op, expr=value, reason=_float_reason(value, op))
            layer.inputs = []
            relax.analysis.post_order_visit(
                value, lambda e, layer=layer: layer.inputs.append(names[e])
                if isinstance(e, relax.Var) and e in names and names[e] not in layer.inputs
                else None)
        layer.name = new_name(layer.kind if layer.kind != "float" else _short(op))
        layer.op = op
        layer.expr = value
        layer.bindings = group
        layer.output = layer.name
        names[var] = layer.name
        if _is_tensor(var.ty):
            try:
                shape = tvm_compat.shape_of(var.ty)
            except ValueError as err:
                raise CompileError(
                    f"{_short(op)} ({layer.name}): its output shape depends on input values "
                    f"({err}); Lepton compiles static shapes only, so make the inputs that "
                    "reach this shape constants of the model") from None
            tensors[layer.name] = Tensor(layer.name, shape, tvm_compat.dtype_of(var.ty))
        else:
            tensors[layer.name] = Tensor(layer.name, (), "tuple")
        layers.append(layer)

    ret = func.body.body
    tuple_output = isinstance(ret, relax.Tuple)
    returned = list(ret.fields) if tuple_output else [ret]
    def output_name(index: int, value: Any) -> str:
        if tvm_compat.is_constant(value):  # an output the model fixes: returned as stored
            names[value] = f"constant_output{index}"
            tensors[names[value]] = Tensor(names[value], tvm_compat.shape_of(value.ty),
                                           tvm_compat.dtype_of(value.ty))
        if value not in names:
            raise CompileError(
                f"model output #{index} is a {type(value).__name__}, computed from no layer; "
                "this is a compiler bug, please report it")
        return names[value]

    outputs = [output_name(i, v) for i, v in enumerate(returned)]
    # A returned tuple var (``gv = (lv24,)``) is a float layer over the real outputs.
    if len(outputs) == 1 and tensors[outputs[0]].dtype == "tuple":
        producer = next(lay for lay in layers if lay.output == outputs[0])
        if isinstance(producer.expr, relax.Tuple):
            layers.remove(producer)
            del tensors[producer.output]
            outputs = [output_name(i, f) for i, f in enumerate(producer.expr.fields)]
            tuple_output = True
    return LayerGraph(inputs, outputs, tuple_output, tensors, layers, params, names,
                      fixed=fixed)


def _per_tensor_qparams(call: Any, qdtype: str) -> QParams | None:
    """The int8 quantization of a per-tensor ``quantize``/``dequantize`` with constant scale
    and zero point (a uint8 zero point shifts by -128: the same real values), or None."""
    scale, zero_point = call.args[1], call.args[2]
    if qdtype not in ("int8", "uint8") or not (is_const(scale) and is_const(zero_point)):
        return None
    s, z = const(scale), const(zero_point)
    if s.size != 1 or z.size != 1 or not np.isfinite(s).all() or float(s.ravel()[0]) <= 0:
        return None
    zp = int(z.ravel()[0]) - (128 if qdtype == "uint8" else 0)
    return QParams(float(np.float32(s.ravel()[0])), zp)


def _float_reason(value: Any, op: str) -> str:
    from tvm import relax

    if not isinstance(value, relax.Call):
        return "not an operator (tuple plumbing)"
    reasons = {
        "relax.nn.conv2d": "conv2d that is not NHWC/HWIO or has a non-constant weight",
        "relax.matmul": "matmul with broadcast batch dimensions or a constant weight of "
                        "rank > 2",
        "relax.add": "add with a constant or broadcast operand that is not a bias",
    }
    return reasons.get(op, f"{_short(op)} has no integer kernel; it runs in float32 "
                           "between a dequantize and a quantize")


def _match(value: Any, op: str, ctx: MatchContext) -> Layer | None:
    """The layer of the first registered kind that matches ``value``, or None."""
    from tvm import relax

    if not isinstance(value, relax.Call):
        return None
    for kind in candidates(op):
        layer = kind.match(value, op, ctx)
        if layer is not None:
            return layer
    return None


def partition_cycle(edges: list[tuple[Any, Any]], group_of: dict[Any, str]) -> list[str] | None:
    """A cycle among groups if contracting each group of nodes to one kernel creates one.

    A group that is not convex (a path leaves it and comes back) shows up as a cycle in the
    quotient graph, as do two groups that depend on each other; ``None`` means the grouping
    is a legal partition (checked with networkx).
    """
    import networkx as nx

    quotient = nx.DiGraph()
    quotient.add_nodes_from(set(group_of.values()))
    for a, b in edges:
        ga, gb = group_of[a], group_of[b]
        if ga != gb:
            quotient.add_edge(ga, gb)
    try:
        cycle = nx.find_cycle(quotient)
    except nx.NetworkXNoCycle:
        return None
    return [edge[0] for edge in cycle]


def check_partition(graph: LayerGraph) -> None:
    """Raise CompileError if the layer grouping of ``graph`` is not a legal partition."""
    from tvm import relax

    group_of: dict[Any, str] = {}
    for layer in graph.layers:
        for var, _ in layer.bindings:
            group_of[var] = layer.name
    edges = []
    for layer in graph.layers:
        for var, value in layer.bindings:
            sources: list[Any] = []
            relax.analysis.post_order_visit(
                value, lambda e, s=sources: s.append(e) if isinstance(e, relax.Var) else None)
            edges += [(src, var) for src in sources if src in group_of]
    cycle = partition_cycle(edges, group_of)
    if cycle is not None:
        raise CompileError(f"fusing {' -> '.join(cycle)} would create a cycle between kernels; "
                           "this is a compiler bug, please report it with the model")
