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


def _let(value: Any, body: Any, name: str = "v") -> Any:
    """``body(v)`` with ``v`` bound to ``value`` once: schedules inline elementwise stages
    into their consumers, and an input read several times would be inlined (and computed)
    as often — exponentially often along a chain of such ops."""
    from tvm import tirx

    var = tirx.Var(name, "float32")  # every use here is float32
    return tirx.Let(var, value, body(var))


def _f32(c: float) -> Any:
    from tvm import tirx

    return tirx.const(c, "float32")


def _big(v: Any) -> Any:
    from tvm import tirx

    return tirx.Or(v > _f32(80.0), v < _f32(-80.0))


#: Cephes ``expf``: 2^n * (1 + f + f^2 * P(f)) with f = x - n ln 2 (TOPI's ``fast_exp``).
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
          1.6666665459e-1, 5.0000001201e-1)
#: Eigen's float ``erf``: x P(x^2) / Q(x^2) on [-4, 4] (TOPI's ``fast_erf``).
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def _horner(t: Any, coefficients: tuple[float, ...]) -> Any:
    acc = _f32(coefficients[0])
    for c in coefficients[1:]:
        acc = acc * t + _f32(c)
    return acc


def exp_expr(v: Any) -> Any:
    """float32 ``exp(v)`` (``v`` a variable) with ``expf``'s NaN, overflow and underflow;
    beyond |v| = 80 (where the polynomial's range ends) as ``exp(v / 2)`` squared. Every
    intermediate is let-bound: one evaluation each."""
    from tvm import tirx

    def power(h: Any) -> Any:
        return _let(tirx.max(tirx.min(h, _f32(88.3762626647950)), _f32(-88.3762626647949)),
                    lambda x: _let(tirx.floor(x * _f32(1.44269504088896341) + _f32(0.5)),
                                   lambda n: _let(x - n * _f32(0.6931471805599453),
                                                  lambda f: _scaled(n, f), "f"), "n"), "x")

    def _scaled(n: Any, f: Any) -> Any:
        two_n = tirx.reinterpret("float32", tirx.shift_left(
            tirx.Cast("int32", n) + tirx.const(127, "int32"), tirx.const(23, "int32")))
        return two_n * (_horner(f, _EXP_P) * f * f + f + _f32(1.0))

    return _let(tirx.Select(_big(v), v * _f32(0.5), v), lambda h: _let(power(h), lambda e:
                tirx.Select(tirx.isnan(v), v, tirx.Select(
                    v > _f32(_EXP_INF_ABOVE), _f32(float("inf")),
                    tirx.Select(v < _f32(_EXP_ZERO_BELOW), _f32(0.0),
                                tirx.Select(_big(v), e * e, e)))), "e"), "h")


def erf_expr(v: Any) -> Any:
    """float32 ``erf(v)`` (``v`` a variable), NaN in gives NaN out."""
    from tvm import tirx

    return _let(tirx.max(tirx.min(v, _f32(4.0)), _f32(-4.0)), lambda x: _let(
        x * x, lambda x2: tirx.Select(tirx.isnan(v), v, x * _horner(x2, _ERF_P) /
                                      _horner(x2, _ERF_Q)), "x2"), "x")


def _exp(x: Any) -> Any:
    from tvm import te

    return te.compute(x.shape, lambda *i: _let(x(*i), exp_expr), name="fast_exp_ieee")


def _gelu(x: Any) -> Any:
    from tvm import te

    half = _f32(0.5)
    return te.compute(x.shape, lambda *i: _let(x(*i), lambda v: _let(
        erf_expr_scaled(v), lambda e: v * (half + e * half), "erf")), name="gelu")


def erf_expr_scaled(v: Any) -> Any:
    """``erf(v / sqrt 2)``."""
    return _let(v * _f32(0.5**0.5), erf_expr, "s")


def _softmax(x: Any, axis: int) -> Any:
    from tvm import topi

    axis = axis % len(x.shape)
    e = _exp(x - topi.max(x, axis=axis, keepdims=True))
    return e / topi.sum(e, axis=axis, keepdims=True)


def _float32(call: Any) -> bool:
    return getattr(call.args[0].ty, "dtype", None) == "float32"


def legalize_map() -> dict[str, Any]:
    """``LegalizeOps(customize_legalize_map=...)`` entries for ``relax.exp``,
    ``relax.nn.gelu`` and ``relax.nn.softmax`` (float32; others fall back to TVM's), plus
    :func:`exact_ops.legalize_map`'s."""
    from tvm import ir

    from lepton_compiler.lower import exact_ops

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

    return {"relax.exp": exp, "relax.nn.gelu": gelu, "relax.nn.softmax": softmax,
            **exact_ops.legalize_map()}
