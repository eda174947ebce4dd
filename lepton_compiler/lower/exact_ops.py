"""Host legalizations where TOPI's compute something other than the ONNX reference.

- ``relax.max``/``relax.min`` on floats: TOPI starts the reduction from the lowest/highest
  *finite* value, so the max of a row of ``-inf`` (a fully masked attention row) came out as
  ``-3.4e38``; here the identity is ``-inf``/``+inf``.
- ``relax.cosh``/``relax.sinh``: TVM has no host lowering of their intrinsics; here
  ``(exp(x) +- exp(-x)) / 2``.
- ``relax.cumsum``: TVM registers no legalization; here TOPI's scan.
"""

from __future__ import annotations

from typing import Any

from lepton_compiler.target.qkernels import reduced_shape, reduction_index


def _extreme(x: Any, axis: Any, keepdims: bool, largest: bool) -> Any:
    """ReduceMax/ReduceMin whose identity is -inf/+inf (TOPI starts from the finite
    lowest/highest value, so the max of a row of -inf came out as -3.4e38)."""
    from tvm import te, tirx

    rank = len(x.shape)
    axes = sorted({int(a) % rank for a in axis}) if axis is not None else list(range(rank))
    combine = tirx.max if largest else tirx.min
    reducer = te.comm_reducer(lambda a, b: combine(a, b), lambda dtype: tirx.const(
        float("-inf") if largest else float("inf"), dtype), name="extreme")
    reduced = [te.reduce_axis((0, x.shape[a]), name=f"k{a}") for a in axes]

    def element(*index: Any) -> Any:
        full = reduction_index(index, reduced, axes, rank, keepdims)
        return reducer(x[tuple(full)], axis=reduced)

    return te.compute(list(reduced_shape(x.shape, axes, keepdims)), element,
                      name=f"{x.op.name}_red")


def _hyperbolic(x: Any, sign: float) -> Any:
    from tvm import te, tirx

    half = tirx.const(0.5, x.dtype)
    return te.compute(x.shape, lambda *i: (tirx.exp(x(*i)) + tirx.const(sign, x.dtype) *
                                           tirx.exp(-x(*i))) * half, name="hyperbolic")


def legalize_map() -> dict[str, Any]:
    """``LegalizeOps`` entries for float ``relax.max``/``relax.min`` (other dtypes keep
    TVM's), ``relax.cosh``/``relax.sinh`` and ``relax.cumsum``."""
    from tvm import ir

    default = {name: ir.Op.get(name).get_attr("FLegalize")
               for name in ("relax.max", "relax.min")}

    def extreme(name: str) -> Any:
        def legalize(bb: Any, call: Any) -> Any:
            dtype = str(getattr(call.args[0].ty, "dtype", ""))
            axis = None if call.attrs.axis is None else [int(a) for a in call.attrs.axis]
            if not dtype.startswith(("float", "bfloat")):
                return default[name](bb, call)
            return bb.call_te(_extreme, call.args[0], axis, bool(call.attrs.keepdims),
                              name == "relax.max", primfunc_name_hint=name[len("relax."):])
        return legalize

    def hyperbolic(sign: float) -> Any:
        def legalize(bb: Any, call: Any) -> Any:
            return bb.call_te(_hyperbolic, call.args[0], sign,
                              primfunc_name_hint="cosh" if sign > 0 else "sinh")
        return legalize

    def cumsum(bb: Any, call: Any) -> Any:
        from tvm import topi

        axis = None if call.attrs.axis is None else int(call.attrs.axis)
        dtype = str(call.attrs.dtype) if call.attrs.dtype is not None and \
            str(call.attrs.dtype) else None
        return bb.call_te(topi.cumsum, call.args[0], axis, dtype,
                          bool(call.attrs.exclusive) if call.attrs.exclusive is not None
                          else None, primfunc_name_hint="cumsum")

    return {"relax.max": extreme("relax.max"), "relax.min": extreme("relax.min"),
            "relax.cosh": hyperbolic(1.0), "relax.sinh": hyperbolic(-1.0),
            "relax.cumsum": cumsum}
