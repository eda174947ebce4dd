"""Host legalizations of GELU, softmax and exp with vectorisable polynomials.

TVM legalizes ``erf`` and ``exp`` to calls of the C library's ``erff``/``expf``, which LLVM
cannot vectorise: GELU on a 128 x 1024 activation took 0.55 ms on one core-pair, ~20x its
memory-bandwidth cost. These legalizations use TOPI's polynomial ``fast_erf``/``fast_exp``
(float32 only; other dtypes keep TVM's) and keep the IEEE edge cases of the exact functions:
NaN in gives NaN out, ``exp`` overflows to ``inf`` and underflows to 0 where ``expf`` does.
"""

from __future__ import annotations

from typing import Any

#: ``expf`` is ``inf`` above this and 0 below :data:`_EXP_ZERO_BELOW` (float32).
_EXP_INF_ABOVE = 88.72283935546875
_EXP_ZERO_BELOW = -103.97208404541016


def _exp(x: Any) -> Any:
    """float32 ``exp`` by TOPI's ``fast_exp`` with ``expf``'s NaN, overflow and underflow;
    beyond |x| = 80 (where ``fast_exp`` clamps) as ``fast_exp(x / 2)`` squared."""
    from tvm import te, tirx, topi

    def f32(c: float) -> Any:
        return tirx.const(c, "float32")

    def big(v: Any) -> Any:
        return tirx.Or(v > f32(80.0), v < f32(-80.0))

    half = te.compute(x.shape, lambda *i: tirx.Select(big(x(*i)), x(*i) * f32(0.5), x(*i)),
                      name="exp_arg")
    fast = topi.fast_exp(half)

    def at(*i: Any) -> Any:
        v, e = x(*i), fast(*i)
        return tirx.Select(tirx.isnan(v), v, tirx.Select(
            v > f32(_EXP_INF_ABOVE), f32(float("inf")),
            tirx.Select(v < f32(_EXP_ZERO_BELOW), f32(0.0),
                        tirx.Select(big(v), e * e, e))))

    return te.compute(x.shape, at, name="fast_exp_ieee")


def _gelu(x: Any) -> Any:
    from tvm import te, tirx, topi

    half = tirx.const(0.5, "float32")
    erf = topi.fast_erf(x * tirx.const(0.5**0.5, "float32"))
    return te.compute(x.shape, lambda *i: tirx.Select(
        tirx.isnan(x(*i)), x(*i), x(*i) * (half + erf(*i) * half)), name="gelu")


def _softmax(x: Any, axis: int) -> Any:
    from tvm import topi

    axis = axis % len(x.shape)
    e = _exp(x - topi.max(x, axis=axis, keepdims=True))
    return e / topi.sum(e, axis=axis, keepdims=True)


def _float32(call: Any) -> bool:
    return getattr(call.args[0].ty, "dtype", None) == "float32"


def legalize_map() -> dict[str, Any]:
    """``LegalizeOps(customize_legalize_map=...)`` entries for ``relax.exp``,
    ``relax.nn.gelu`` and ``relax.nn.softmax`` (float32; others fall back to TVM's)."""
    from tvm import ir

    default = {name: ir.Op.get(name).get_attr("FLegalize")
               for name in ("relax.exp", "relax.nn.gelu", "relax.nn.softmax")}

    def exp(bb: Any, call: Any) -> Any:
        if not _float32(call):
            return default["relax.exp"](bb, call)
        return bb.call_te(_exp, call.args[0], primfunc_name_hint="exp")

    def gelu(bb: Any, call: Any) -> Any:
        if not _float32(call):
            return default["relax.nn.gelu"](bb, call)
        return bb.call_te(_gelu, call.args[0], primfunc_name_hint="gelu")

    def softmax(bb: Any, call: Any) -> Any:
        if not _float32(call):
            return default["relax.nn.softmax"](bb, call)
        return bb.call_te(_softmax, call.args[0], int(call.attrs.axis),
                          primfunc_name_hint="softmax")

    return {"relax.exp": exp, "relax.nn.gelu": gelu, "relax.nn.softmax": softmax}
