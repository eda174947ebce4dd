"""PropagateNaN: clamps, max/min and max-pooling that keep a NaN a NaN, as PyTorch does.

TVM lowers ``relu`` and ``clip`` to ``max``/``min``, which LLVM compiles to instructions that
return the *other* operand when one is NaN: a NaN entering ``relu`` leaves as 0, so a model
that overflowed answers with plausible numbers instead of NaN. Written as selects, the same
clamps pass a NaN through (a comparison with NaN is false) at the same cost:

Before::

    y = R.nn.relu(x)
    z = R.clip(x, 0, 6)

After::

    y = R.where(R.less(x, 0), 0, x)
    z = R.where(R.less(x, 0), 0, R.where(R.greater(x, 6), 6, x))

A max-pool window holding a NaN gives NaN too (PyTorch's and ``onnx.reference``'s rule; the
vector max alone keeps whatever follows the NaN in the window), from a second pooling of
``isnan(x)``. Likewise a max/min reduction over a NaN gives NaN, and an elementwise
maximum/minimum with a NaN operand gives that NaN. Applies to float tensors only, at
lowering time (after quantization has matched its patterns); int8 kernels clamp integers
and never see a NaN.
"""

from __future__ import annotations

from typing import Any


def _float(expr: Any) -> str | None:
    dtype = str(getattr(expr.ty, "dtype", ""))
    return dtype if dtype.startswith(("float", "bfloat")) else None


def PropagateNaN() -> Any:
    """The module pass ``lepton.PropagateNaN`` (see the module docstring)."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, op: Any) -> Any:
            call = self.visit_expr_post_order(op)
            name = getattr(call.op, "name", "")
            if name not in ("relax.nn.relu", "relax.clip", "relax.nn.max_pool2d", "relax.max",
                            "relax.min", "relax.maximum", "relax.minimum"):
                return call
            x = call.args[0]
            dtype = _float(x)
            if dtype is None:
                return call
            if name in ("relax.maximum", "relax.minimum"):
                # Either operand NaN gives NaN, as onnxruntime's Max/Min and torch.maximum.
                a, b = call.args
                out = self.builder_.emit(call)
                out = self.builder_.emit(relax.op.where(relax.op.isnan(b), b, out))
                return relax.op.where(relax.op.isnan(a), a, out)
            if name in ("relax.max", "relax.min"):
                # A reduction over a NaN gives NaN (numpy, PyTorch's amax, onnx.reference).
                reduced = self.builder_.emit(call)
                flags = self.builder_.emit(relax.op.astype(relax.op.isnan(x), dtype))
                hit = self.builder_.emit(relax.op.max(flags, call.attrs.axis,
                                                      call.attrs.keepdims))
                nan = self.builder_.emit(relax.op.greater(hit, relax.const(0.0, dtype)))
                return relax.op.where(nan, relax.const(float("nan"), dtype), reduced)
            if name == "relax.nn.max_pool2d":
                # A window holding NaN gives NaN (PyTorch, onnx.reference); the vector max
                # alone would keep whatever follows the NaN in the window.
                pooled = self.builder_.emit(call)
                flags = self.builder_.emit(relax.op.astype(relax.op.isnan(x), dtype))
                hit = self.builder_.emit(relax.Call(call.op, [flags], call.attrs,
                                                    call.ty_args))
                nan = self.builder_.emit(relax.op.greater(hit, relax.const(0.0, dtype)))
                return relax.op.where(nan, relax.const(float("nan"), dtype), pooled)
            if name == "relax.nn.relu":
                low, high = 0.0, None
            else:
                low, high = (float(a.value) for a in call.args[1:3])
            out = x
            if high is not None and high != float("inf"):
                above = self.builder_.emit(relax.op.greater(x, relax.const(high, dtype)))
                out = self.builder_.emit(relax.op.where(above, relax.const(high, dtype), x))
            if low != float("-inf"):
                below = self.builder_.emit(relax.op.less(x, relax.const(low, dtype)))
                return relax.op.where(below, relax.const(low, dtype), out)
            return out

    @tvm.transform.module_pass(opt_level=0, name="lepton.PropagateNaN")
    def transform(mod: Any, _ctx: Any) -> Any:
        if "main" not in [gv.name_hint for gv in mod.functions]:
            return mod
        rewriter = Rewriter(mod)
        main = rewriter.visit_expr(mod["main"])
        mod = rewriter.builder_.get()
        mod["main"] = main
        return relax.transform.Normalize()(mod)

    return transform
