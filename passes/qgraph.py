"""The layer graph that quantization works on, read from a simplified, NHWC Relax ``main``.

Relax bindings are grouped into layers the integer rewrite handles as one unit — conv2d or
matmul with its bias add and ReLU/ReLU6, a residual add with its ReLU, pooling, ReLU,
reshape/transpose — and every other binding becomes a ``float`` layer that keeps its Relax
expression. Layers get stable names (``conv2d_0``, ``dense_1``, ``add_0``, ``softmax_0``...)
that calibration tables, ``skip``/``overrides`` and the reports use. Tensors are named after
the layer that produces them (graph inputs keep their own names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_compiler import tvm_compat

GEMM_KINDS = ("conv2d", "dense")
COMPUTE_KINDS = (*GEMM_KINDS, "matmul", "add")  # layers with their own output range
FOLLOW_KINDS = ("max_pool2d", "avg_pool2d", "mean", "clip", "relu", "reshape",
                "permute_dims")


@dataclass
class Tensor:
    """A tensor of the layer graph."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class Layer:
    """One layer: its kind, inputs/output tensor names and what the rewrite needs."""

    name: str
    kind: str
    inputs: list[str]
    output: str
    op: str = ""                    # the Relax op it came from
    attrs: dict[str, Any] = field(default_factory=dict)
    weight: np.ndarray | None = None  # conv2d: HWIO; dense: [K, N]
    bias: np.ndarray | None = None
    act: str | None = None          # "relu" | "relu6" folded into the clamp
    expr: Any = None                # the Relax expression of the first binding
    bindings: list[tuple[Any, Any]] = field(default_factory=list)  # (var, value), in order
    reason: str = ""                # float layers: why they are not quantized


@dataclass
class LayerGraph:
    """Layers in execution order over named tensors."""

    inputs: list[str]
    outputs: list[str]
    tuple_output: bool
    tensors: dict[str, Tensor]
    layers: list[Layer]
    params: list[Any]               # the Relax parameters of main
    var_names: dict[Any, str] = field(default_factory=dict)  # Relax var -> tensor name
    # Functions of the module besides main (PrimFuncs an importer emitted call_tir to, e.g.
    # ONNX Clip); a module rebuilt from the graph must keep them.
    helpers: dict[Any, Any] = field(default_factory=dict)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def producer(self, tensor: str) -> Layer | None:
        for layer in self.layers:
            if layer.output == tensor:
                return layer
        return None


def _op_name(expr: Any) -> str:
    from tvm import relax

    if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
        return str(expr.op.name)
    return type(expr).__name__


def _short(op: str) -> str:
    return op.split(".")[-1]


def _is_const(expr: Any) -> bool:
    return tvm_compat.is_constant(expr)


def _const(expr: Any) -> np.ndarray:
    return tvm_compat.constant_numpy(expr)


def _is_tensor(ty: Any) -> bool:
    return isinstance(ty, tvm_compat.tensor_type_class())


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _prim(expr: Any) -> float | None:
    value = getattr(expr, "value", None)
    if value is None:
        return None
    inner = getattr(value, "value", value)
    try:
        return float(inner)
    except (TypeError, ValueError):
        return None


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
        const = b if a.same_as(var) else a if b.same_as(var) else None
        if const is None or not _is_const(const):
            return var, None
        values = _const(const)
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
            lo, hi = (_prim(a) for a in nxt.value.args[1:3])
            if lo == 0.0 and hi == 6.0:
                act = "relu6"
        if act is None:
            return var, None
        absorbed.add(index_of[id(nxt)])
        group.append((nxt.var, nxt.value))
        return nxt.var, act

    for i, b in enumerate(bindings):
        if i in absorbed:
            continue
        value, var = b.value, b.var
        op = _op_name(value)
        group = [(var, value)]
        layer = _match(value, op, names, tensors)
        if layer is not None and layer.kind in GEMM_KINDS:
            channels = layer.weight.shape[-1]
            var, layer.bias = absorb_bias(var, channels)
            var, layer.act = absorb_act(var)
        elif layer is not None and layer.kind in ("add", "matmul"):
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
            tensors[layer.name] = Tensor(layer.name, tvm_compat.shape_of(var.ty),
                                         tvm_compat.dtype_of(var.ty))
        else:
            tensors[layer.name] = Tensor(layer.name, (), "tuple")
        layers.append(layer)

    ret = func.body.body
    tuple_output = isinstance(ret, relax.Tuple)
    returned = list(ret.fields) if tuple_output else [ret]
    for index, value in enumerate(returned):
        if value not in names:
            from lepton_compiler.errors import CompileError

            raise CompileError(
                f"model output #{index} does not depend on any input (it folds to a "
                f"{type(value).__name__}); Lepton compiles outputs computed from the inputs — "
                "remove the output or make it depend on an input")
    if tuple_output:
        outputs = [names[f] for f in ret.fields]
    else:
        outputs = [names[ret]]
    # A returned tuple var (``gv = (lv24,)``) is a float layer over the real outputs.
    if len(outputs) == 1 and tensors[outputs[0]].dtype == "tuple":
        producer = next(lay for lay in layers if lay.output == outputs[0])
        if isinstance(producer.expr, relax.Tuple):
            layers.remove(producer)
            del tensors[producer.output]
            outputs = [names[f] for f in producer.expr.fields]
            tuple_output = True
    return LayerGraph(inputs, outputs, tuple_output, tensors, layers, params, names)


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


def _match(value: Any, op: str, names: dict, tensors: dict) -> Layer | None:
    """The quantizable layer ``value`` starts, or None."""
    from tvm import relax

    if not isinstance(value, relax.Call):
        return None
    args = value.args

    def var_input(expr: Any) -> str | None:
        return names.get(expr) if isinstance(expr, relax.Var) else None

    attrs = value.attrs
    if op == "relax.nn.conv2d":
        x = var_input(args[0])
        if (x is None or not _is_const(args[1])
                or str(attrs.data_layout) != "NHWC" or str(attrs.kernel_layout) != "HWIO"
                or str(attrs.out_layout) != "NHWC"):
            return None
        pad = _ints(attrs.padding)
        if len(pad) == 2:
            pad = (pad[0], pad[1], pad[0], pad[1])
        return Layer("", "conv2d", [x], "", weight=_const(args[1]).astype(np.float64),
                     attrs={"strides": _ints(attrs.strides), "padding": pad,
                            "dilation": _ints(attrs.dilation), "groups": int(attrs.groups)})
    if op == "relax.matmul":
        x = var_input(args[0])
        if x is not None and _is_const(args[1]) and len(_const(args[1]).shape) == 2:
            return Layer("", "dense", [x], "", weight=_const(args[1]).astype(np.float64))
        if x is not None and _is_const(args[1]):  # a weight broadcast over the batch
            w = _const(args[1])
            flat = w.reshape(-1, *w.shape[-2:])
            if all(np.array_equal(flat[0], f) for f in flat[1:]):
                return Layer("", "dense", [x], "", weight=flat[0].astype(np.float64))
            return None
        y = var_input(args[1])
        if x is None or y is None:
            return None
        a, b = tensors[x].shape, tensors[y].shape
        if len(a) < 2 or len(a) != len(b) or a[:-2] != b[:-2] or a[-1] != b[-2]:
            return None  # broadcast batches stay float
        return Layer("", "matmul", [x, y], "")
    if op == "relax.add":
        a, b = var_input(args[0]), var_input(args[1])
        if a is None or b is None or tensors[a].shape != tensors[b].shape:
            return None
        return Layer("", "add", [a, b], "")
    if op == "relax.nn.relu":
        x = var_input(args[0])
        return Layer("", "relu", [x], "") if x is not None else None
    if op == "relax.nn.max_pool2d":
        x = var_input(args[0])
        if x is None or str(attrs.layout) != "NHWC" or bool(attrs.ceil_mode) or any(
                int(d) != 1 for d in attrs.dilation):
            return None
        pad = _ints(attrs.padding)
        if len(pad) == 2:
            pad = (pad[0], pad[1], pad[0], pad[1])
        return Layer("", "max_pool2d", [x], "", attrs={
            "pool_size": _ints(attrs.pool_size), "strides": _ints(attrs.strides),
            "padding": pad})
    if op in ("relax.nn.adaptive_avg_pool2d", "relax.nn.avg_pool2d"):
        x = var_input(args[0])
        if x is None or str(attrs.layout) != "NHWC":
            return None
        _, h, w, _ = tensors[x].shape
        if op == "relax.nn.adaptive_avg_pool2d":
            size = _ints(attrs.output_size) if attrs.output_size is not None else (h, w)
            if size not in ((1, 1), (1,)):
                return None
            pool, strides = (h, w), (1, 1)
        else:
            if (any(_ints(attrs.padding)) or bool(attrs.ceil_mode)
                    or any(int(d) != 1 for d in attrs.dilation)):
                return None
            pool, strides = _ints(attrs.pool_size), _ints(attrs.strides)
        return Layer("", "avg_pool2d", [x], "", attrs={"pool_size": pool, "strides": strides})
    if op == "relax.mean":
        x = var_input(args[0])
        if x is None or attrs.axis is None:
            return None
        rank = len(tensors[x].shape)
        return Layer("", "mean", [x], "", attrs={
            "axes": tuple(sorted(int(a) % rank for a in attrs.axis)),
            "keepdims": bool(attrs.keepdims)})
    if op == "relax.clip":
        x = var_input(args[0])
        lo, hi = (_prim(a) for a in args[1:3])
        if x is None or lo is None or hi is None or not lo <= 0.0 <= hi:
            return None
        return Layer("", "clip", [x], "", attrs={"min": lo, "max": hi})
    if op == "relax.reshape":
        x = var_input(args[0])
        return Layer("", "reshape", [x], "") if x is not None else None
    if op in ("relax.expand_dims", "relax.squeeze"):  # same bytes, new shape
        x = var_input(args[0])
        return Layer("", "reshape", [x], "") if x is not None else None
    if op == "relax.broadcast_to":  # a broadcast to the same shape is the identity
        x = var_input(args[0])
        same = x is not None and tuple(int(d) for d in args[1].values) == tensors[x].shape
        return Layer("", "reshape", [x], "") if same else None
    if op == "relax.permute_dims":
        x = var_input(args[0])
        if x is None:
            return None
        axes = attrs.axes
        rank = len(tensors[x].shape)
        return Layer("", "permute_dims", [x], "", attrs={
            "axes": _ints(axes) if axes is not None else tuple(reversed(range(rank)))})
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

    from lepton_compiler.errors import CompileError

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
