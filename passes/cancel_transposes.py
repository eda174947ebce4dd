"""Cancel the transposes TVM's ConvertLayout leaves around ops it has no layout rule for.

``ConvertLayout`` moves conv2d to NHWC and carries the layout through the ops it knows; around
an elementwise op it does not know (``clip``, i.e. ReLU6) it transposes back to NCHW and forth
again: ``permute(clip(permute(x, to_nchw)), to_nhwc)``. An elementwise op commutes with any
transpose, so the sandwich is ``clip(x)`` when the two permutations cancel.
"""

from __future__ import annotations

from typing import Any

# Elementwise ops (on their first argument; the others are scalars) without layout rules.
ELEMENTWISE = ("relax.clip",)


def _axes(call: Any) -> list[int] | None:
    axes = call.attrs.axes
    return None if axes is None else [int(a) for a in axes]


def CancelTransposes() -> Any:
    """The pass: rewrite ``permute(op(permute(x, a), ...), b)`` to ``op(x, ...)`` when ``b``
    undoes ``a`` and ``op`` is elementwise."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x = wildcard()
    inner = is_op("relax.permute_dims")(x)
    ops = [is_op(name)(inner, wildcard(), wildcard()) for name in ELEMENTWISE]
    body = ops[0]
    for alt in ops[1:]:
        body = body | alt
    outer = is_op("relax.permute_dims")(body)

    def rewrite(expr: Any, matches: Any) -> Any:
        first, second = _axes(matches[inner]), _axes(matches[outer])
        if first is None or second is None or len(first) != len(second):
            return expr
        if [first[i] for i in second] != list(range(len(first))):
            return expr
        op_call = matches[body]
        return relax.Call(op_call.op, [matches[x], *op_call.args[1:]], op_call.attrs,
                          op_call.ty_args)

    @tvm.transform.module_pass(opt_level=0, name="lepton.CancelTransposes")
    def transform(mod: Any, _ctx: Any) -> Any:
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gv] = rewrite_call(outer, rewrite, func)
        return mod

    return transform
