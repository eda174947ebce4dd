"""CancelTransposes: sink the transposes TVM's ConvertLayout leaves behind until they meet
and cancel.

``ConvertLayout`` moves conv2d to NHWC and carries the layout through the ops it knows;
around ops it has no layout rule for (``clip``, i.e. ReLU6, and ``nn.pad``, as TF-style
"same" padding exports write it) it transposes back to NCHW and forth again. In a
depthwise-separable network that leaves every ReLU6 and pad between two transposes, in the
wrong layout for the int8 rewrite: a conv's activation is not next to it, and every pad is a
layout island.

A transpose commutes with an elementwise op (``clip``, ``relu``, ``sigmoid``..., or a binary
op with a scalar constant) and, with its widths permuted, with a pad. So a transpose whose
only use is such an op moves below it, and on down the chain, until it meets another
transpose: the two compose into one, or into nothing when they cancel. A transpose that
reaches any other op stays (after the ops it passed), so the pass never adds one.

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
    """``call`` is an op a transpose of ``var`` can move below."""
    from tvm import relax

    op = _op(call)
    if not op or not call.args or not call.args[0].same_as(var):
        return False
    if op in UNARY:
        return all(not isinstance(a, relax.Var) for a in call.args[1:])
    if op == PAD:
        return str(call.attrs.pad_mode) in ("constant", "edge", "reflect")
    if op in SCALAR_BINARY:
        return len(call.args) == 2 and _scalar_const(call.args[1])
    return False


def CancelTransposes() -> Any:
    """The module pass ``lepton.CancelTransposes`` (see the module docstring)."""
    import tvm
    from tvm import relax

    from lepton_compiler import tvm_compat

    def uses_and_consumers(func: Any) -> tuple[dict[Any, int], dict[Any, Any]]:
        uses: dict[Any, int] = {}
        consumer: dict[Any, Any] = {}

        def count(expr: Any, owner: Any) -> None:
            def visit(e: Any) -> None:
                if isinstance(e, relax.Var):
                    uses[e] = uses.get(e, 0) + 1
                    consumer[e] = owner
            relax.analysis.post_order_visit(expr, visit)

        for block in func.body.blocks:
            for b in block.bindings:
                count(b.value, b.value)
        count(func.body.body, None)
        return uses, consumer

    @relax.expr_functor.mutator
    class Sinker(relax.PyExprMutator):
        def __init__(self, mod: Any, uses: dict[Any, int], consumer: dict[Any, Any]) -> None:
            super().__init__(mod)
            self.uses, self.consumer = uses, consumer
            self.pending: dict[Any, tuple[Any, tuple[int, ...]]] = {}  # var -> (src, axes)

        def _may_defer(self, var: Any) -> bool:
            """``var`` (a transposed value) has one use, and it is a transpose or an op the
            transpose can move below."""
            if not isinstance(var, relax.DataflowVar) or self.uses.get(var, 0) != 1:
                return False
            nxt = self.consumer.get(var)
            return nxt is not None and ((_op(nxt) == "relax.permute_dims" and
                                        nxt.args[0].same_as(var)) or _commutes(nxt, var))

        def _settle(self, var: Any, src: Any, axes: tuple[int, ...]) -> None:
            """``var`` = ``permute_dims(src, axes)``: defer it, or bind it now."""
            if self._may_defer(var):
                self.pending[var] = (src, axes)
                return
            identity = axes == tuple(range(len(axes)))
            if isinstance(var, relax.DataflowVar) or not self.builder_.current_block_is_dataflow():
                value = src if identity else \
                    self.builder_.emit(relax.op.permute_dims(src, list(axes)))
            else:  # a value the dataflow block hands out
                value = self.builder_.emit_output(
                    src if identity else relax.op.permute_dims(src, list(axes)))
            self.set_var_remap(var, value)

        def _materialize(self, var: Any) -> Any:
            src, axes = self.pending.pop(var)
            if axes == tuple(range(len(axes))):
                value = src
            else:
                value = self.builder_.emit(relax.op.permute_dims(src, list(axes)))
            self.set_var_remap(var, value)
            return value

        def visit_dataflow_var_(self, var: Any) -> Any:
            if var in self.pending:
                return self._materialize(var)
            return super().visit_dataflow_var_(var)

        def visit_var_binding_(self, binding: Any) -> None:
            var, value = binding.var, binding.value
            op = _op(value)
            if op == "relax.permute_dims" and isinstance(value.args[0], relax.Var):
                x = value.args[0]
                rank = len(tvm_compat.shape_of(x.ty))
                axes = _axes(value, rank)
                if x in self.pending:
                    src, first = self.pending.pop(x)
                    self._settle(var, src, tuple(first[i] for i in axes))
                else:
                    self._settle(var, self.visit_expr(x), axes)
                return
            if op and value.args and value.args[0] in self.pending:
                src, axes = self.pending.pop(value.args[0])
                rest = [self.visit_expr(a) for a in value.args[1:]]
                attrs = value.attrs
                if op == PAD:
                    width = [int(w) for w in attrs.pad_width]
                    moved = [0] * len(width)
                    for i, a in enumerate(axes):
                        moved[2 * a:2 * a + 2] = width[2 * i:2 * i + 2]
                    new = self.builder_.emit(relax.op.nn.pad(
                        src, moved, str(attrs.pad_mode), float(attrs.pad_value)))
                else:
                    new = self.builder_.emit(relax.Call(value.op, [src, *rest], attrs,
                                                        value.ty_args))
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
