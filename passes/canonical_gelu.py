"""Recognize GELU written as its erf formula — ``x * (1 + erf(x / sqrt(2))) * 0.5`` in any
grouping of the products, ``x * 0.7071`` for the division — and rewrite it to
``relax.nn.gelu`` (exporters such as ``torch.onnx`` write GELU that way; one op lets an int8
build run it as one table on the NPU's vector unit instead of five float ops on the host).
"""

from __future__ import annotations

import math
from typing import Any

from lepton_compiler import tvm_compat

_SQRT2 = math.sqrt(2.0)


def _scalar(expr: Any) -> float | None:
    if not tvm_compat.is_constant(expr):
        return None
    value = tvm_compat.constant_numpy(expr)
    return float(value.reshape(())) if value.size == 1 and value.dtype.kind == "f" else None


def _near(value: float | None, target: float) -> bool:
    return value is not None and abs(value - target) <= 1e-4 * abs(target)


def _op(expr: Any) -> str:
    return str(getattr(getattr(expr, "op", None), "name", ""))


def fold_erf_gelu(mod: Any) -> Any:
    """``mod`` with every erf-form GELU in ``main`` replaced by ``relax.nn.gelu``."""
    from tvm import relax

    @relax.expr_functor.mutator
    class Fold(relax.PyExprMutator):
        def value_of(self, expr: Any) -> Any:
            if isinstance(expr, relax.Var):
                bound = self.lookup_binding(expr)
                return bound if bound is not None else expr
            return expr

        def factors(self, expr: Any, depth: int = 2) -> list[Any]:
            """The leaves of a product tree of ``multiply`` ops (at most ``depth`` deep)."""
            value = self.value_of(expr)
            if depth and _op(value) == "relax.multiply":
                return [f for a in value.args for f in self.factors(a, depth - 1)]
            return [expr]

        def erf_of(self, expr: Any) -> Any:
            """``x`` when ``expr`` is ``1 + erf(x / sqrt(2))`` (either order, or ``x * c``)."""
            value = self.value_of(expr)
            if _op(value) != "relax.add":
                return None
            for one, rest in (value.args, value.args[::-1]):
                erf = self.value_of(rest)
                if not _near(_scalar(one), 1.0) or _op(erf) != "relax.erf":
                    continue
                scaled = self.value_of(erf.args[0])
                if _op(scaled) == "relax.divide" and _near(_scalar(scaled.args[1]), _SQRT2):
                    return scaled.args[0]
                if _op(scaled) == "relax.multiply":
                    for x, c in (scaled.args, scaled.args[::-1]):
                        if _near(_scalar(c), 1.0 / _SQRT2):
                            return x
            return None

        def visit_call_(self, op: Any) -> Any:
            call = self.visit_expr_post_order(op)
            if _op(call) != "relax.multiply":
                return call
            leaves = self.factors(call)
            halves = [f for f in leaves if _near(_scalar(f), 0.5)]
            if len(leaves) != 3 or len(halves) != 1:
                return call
            for inner in leaves:
                x = self.erf_of(inner)
                others = [f for f in leaves if f is not inner and f is not halves[0]]
                if x is not None and len(others) == 1 and others[0].same_as(x):
                    return relax.op.nn.gelu(x)
            return call

    folder = Fold(mod)
    folder.builder_.update_func(mod.get_global_var("main"), folder.visit_expr(mod["main"]))
    return relax.transform.DeadCodeElimination()(folder.builder_.get())
