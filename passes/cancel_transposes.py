"""CancelTransposes: sink the transposes TVM's ConvertLayout leaves behind until they meet
and cancel.

``ConvertLayout`` moves conv2d to NHWC and carries the layout through the ops it knows;
around ops it has no layout rule for (``clip``, i.e. ReLU6, and ``nn.pad``, as TF-style
"same" padding exports write it) it transposes back to NCHW and forth again. In a
depthwise-separable network that leaves every ReLU6 and pad between two transposes, in the
wrong layout for the int8 rewrite: a conv's activation is not next to it, and every pad is a
layout island.

A transpose commutes with an elementwise op (``clip``, ``relu``, ``sigmoid``..., a binary op
with a scalar constant or with another tensor transposed the same way, a per-tensor quantize
or dequantize), with a pad (its widths permuted) and with an NCHW pooling (which becomes
the NHWC pooling). So a transpose that only such ops and other transposes read moves below
them, and on down the chains, until it meets another transpose: the two compose into one,
or into nothing when they cancel. A transpose that any other op reads stays where it is
(and so do the ops below it), so the pass never adds one.

Before::

    a = R.permute_dims(conv, [0, 3, 1, 2])       # NHWC -> NCHW
    b = R.clip(a, 0, 6)
    c = R.nn.pad(b, [0, 0, 0, 0, 1, 1, 1, 1])    # pads H and W
    d = R.permute_dims(c, [0, 2, 3, 1])          # NCHW -> NHWC
    e = R.nn.conv2d(d, w, data_layout="NHWC", ...)

After::

    b = R.clip(conv, 0, 6)
    c = R.nn.pad(b, [0, 0, 1, 1, 1, 1, 0, 0])
    e = R.nn.conv2d(c, w, data_layout="NHWC", ...)
"""

from __future__ import annotations

from typing import Any

#: Ops that act elementwise on their first argument (the others are scalars or attributes).
UNARY = ("relax.clip", "relax.nn.relu", "relax.nn.leakyrelu", "relax.sigmoid", "relax.tanh",
         "relax.nn.silu", "relax.nn.gelu", "relax.nn.gelu_tanh", "relax.exp", "relax.negative",
         "relax.abs", "relax.sqrt", "relax.astype")
#: Binary ops that commute with a transpose when the other operand is a scalar constant.
SCALAR_BINARY = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide",
                 "relax.maximum", "relax.minimum")
PAD = "relax.nn.pad"
#: A pre-quantized model's QuantizeLinear/DequantizeLinear, when per tensor.
PER_TENSOR_QDQ = ("relax.quantize", "relax.dequantize")
#: 2-D pooling: an NCHW pooling of NHWC data moved to NCHW is the NHWC pooling, moved.
POOLS = ("relax.nn.max_pool2d", "relax.nn.avg_pool2d")
NHWC_TO_NCHW = (0, 3, 1, 2)


def _op(expr: Any) -> str:
    from tvm import relax

    return str(expr.op.name) if isinstance(expr, relax.Call) and hasattr(expr.op, "name") \
        else ""


def _axes(call: Any, rank: int) -> tuple[int, ...] | None:
    axes = call.attrs.axes
    return tuple(reversed(range(rank))) if axes is None else tuple(int(a) for a in axes)


def _scalar_const(expr: Any) -> bool:
    from lepton_compiler import tvm_compat

    return tvm_compat.is_tensor_constant(expr) and tvm_compat.constant_numpy(expr).ndim == 0


def _commutes(call: Any, var: Any) -> bool:
    """``call`` is an op a transpose of ``var`` may move below (for a binary op of two
    tensors, if the other operand turns out to be transposed the same way)."""
    from tvm import relax

    op = _op(call)
    if not op or not call.args:
        return False
    first = call.args[0].same_as(var)
    if op in SCALAR_BINARY and len(call.args) == 2:
        a, b = call.args
        if isinstance(a, relax.Var) and isinstance(b, relax.Var):
            return True
        return first and _scalar_const(b)
    if not first:
        return False
    if op in UNARY:
        return all(not isinstance(a, relax.Var) for a in call.args[1:])
    if op == PAD:
        return str(call.attrs.pad_mode) in ("constant", "edge", "reflect")
    if op in PER_TENSOR_QDQ:  # the axis attribute means nothing with one scale
        return len(call.args) == 3 and all(_scalar_const(a) for a in call.args[1:])
    if op in POOLS:
        return str(call.attrs.layout) == "NCHW" and str(call.attrs.out_layout) == "NCHW"
    return False


def CancelTransposes() -> Any:
    """The module pass ``lepton.CancelTransposes`` (see the module docstring)."""
    import tvm
    from tvm import relax

    from lepton_compiler import tvm_compat

    def uses_and_consumers(func: Any) -> tuple[dict[Any, int], dict[Any, list[Any]]]:
        uses: dict[Any, int] = {}
        consumer: dict[Any, list[Any]] = {}

        def count(expr: Any, owner: Any) -> None:
            def visit(e: Any) -> None:
                if isinstance(e, relax.Var):
                    uses[e] = uses.get(e, 0) + 1
                    consumer.setdefault(e, []).append(owner)
            relax.analysis.post_order_visit(expr, visit)

        for block in func.body.blocks:
            for b in block.bindings:
                count(b.value, b.value)
        count(func.body.body, None)
        return uses, consumer

    @relax.expr_functor.mutator
    class Sinker(relax.PyExprMutator):
        def __init__(self, mod: Any, uses: dict[Any, int],
                     consumer: dict[Any, list[Any]]) -> None:
            super().__init__(mod)
            self.uses, self.consumer = uses, consumer
            self.pending: dict[Any, tuple[Any, tuple[int, ...]]] = {}  # var -> (src, axes)
            self.bound: dict[Any, Any] = {}  # pending var -> its materialized transpose

        def _may_defer(self, var: Any) -> bool:
            """``var`` (a transposed value) is read only by transposes and by ops the
            transpose can move below (a value the block hands out is bound at once)."""
            readers = self.consumer.get(var, [])
            if not isinstance(var, relax.DataflowVar) or not readers or \
                    None in readers or len(readers) != self.uses.get(var, 0):
                return False
            return all((_op(r) == "relax.permute_dims" and r.args[0].same_as(var))
                       or _commutes(r, var) for r in readers)

        def _transposed(self, src: Any, axes: tuple[int, ...], output: bool = False) -> Any:
            """``permute_dims(src, axes)`` bound now (``src`` itself when ``axes`` is the
            identity); ``output``: a value the dataflow block hands out."""
            identity = axes == tuple(range(len(axes)))
            if output:
                return self.builder_.emit_output(
                    src if identity else relax.op.permute_dims(src, list(axes)))
            return src if identity else \
                self.builder_.emit(relax.op.permute_dims(src, list(axes)))

        def _settle(self, var: Any, src: Any, axes: tuple[int, ...]) -> None:
            """``var`` = ``permute_dims(src, axes)``: defer it, or bind it now."""
            if self._may_defer(var):
                self.pending[var] = (src, axes)
                return
            output = not isinstance(var, relax.DataflowVar) and \
                self.builder_.current_block_is_dataflow()
            self.set_var_remap(var, self._transposed(src, axes, output))

        def _materialize(self, var: Any) -> Any:
            if var not in self.bound:
                self.bound[var] = self._transposed(*self.pending[var])
            return self.bound[var]

        def visit_dataflow_var_(self, var: Any) -> Any:
            if var in self.pending:
                return self._materialize(var)
            return super().visit_dataflow_var_(var)

        def _moved(self, op: str, value: Any, args: list[Any], axes: tuple[int, ...]) -> Any:
            """``value``'s op applied below the transpose: over the untransposed ``args``."""
            attrs = value.attrs
            if op == PAD:
                width = [int(w) for w in attrs.pad_width]
                moved = [0] * len(width)
                for i, a in enumerate(axes):
                    moved[2 * a:2 * a + 2] = width[2 * i:2 * i + 2]
                return relax.op.nn.pad(args[0], moved, str(attrs.pad_mode),
                                       float(attrs.pad_value))
            if op in POOLS:
                make = relax.op.nn.max_pool2d if op.endswith("max_pool2d") else \
                    relax.op.nn.avg_pool2d
                return make(args[0], [int(v) for v in attrs.pool_size],
                            [int(v) for v in attrs.strides], [int(v) for v in attrs.padding],
                            [int(v) for v in attrs.dilation], bool(attrs.ceil_mode),
                            bool(attrs.count_include_pad), "NHWC", "NHWC")
            rest = [self.visit_expr(a) for a in value.args[len(args):]]
            return relax.Call(value.op, [*args, *rest], attrs, value.ty_args)

        def visit_var_binding_(self, binding: Any) -> None:
            var, value = binding.var, binding.value
            op = _op(value)
            if op == "relax.permute_dims" and isinstance(value.args[0], relax.Var):
                x = value.args[0]
                rank = len(tvm_compat.shape_of(x.ty))
                axes = _axes(value, rank)
                if x in self.pending:
                    src, first = self.pending[x]
                    self._settle(var, src, tuple(first[i] for i in axes))
                else:
                    self._settle(var, self.visit_expr(x), axes)
                return
            args = list(value.args) if op else []
            if op in SCALAR_BINARY and len(args) == 2 and all(a in self.pending for a in args):
                (sa, pa), (sb, pb) = self.pending[args[0]], self.pending[args[1]]
                same = tvm_compat.shape_of(args[0].ty) == tvm_compat.shape_of(args[1].ty)
                if pa == pb and same:
                    self._settle(var, self.builder_.emit(self._moved(op, value, [sa, sb], pa)),
                                 pa)
                    return
            elif args and args[0] in self.pending and _commutes(value, args[0]) and not (
                    op in SCALAR_BINARY and isinstance(args[1], relax.Var)) and not (
                    op in POOLS and self.pending[args[0]][1] != NHWC_TO_NCHW):
                src, axes = self.pending[args[0]]
                new = self.builder_.emit(self._moved(op, value, [src], axes))
                self._settle(var, new, axes)
                return
            super().visit_var_binding_(binding)

    @tvm.transform.module_pass(opt_level=0, name="lepton.CancelTransposes")
    def transform(mod: Any, _ctx: Any) -> Any:
        mod = mod.clone()
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                uses, consumer = uses_and_consumers(func)
                sinker = Sinker(mod, uses, consumer)
                new = sinker.visit_expr(func)
                mod[gv] = new
        # A transpose pair that cancels at an output leaves ``gv = lv``: fold the alias.
        return relax.transform.CanonicalizeBindings()(relax.transform.Normalize()(mod))

    return transform
