"""GuardValues: no run-time input value can make a kernel read or write outside a tensor,
or raise a CPU signal.

Operators whose memory addresses or arithmetic depend on tensor *values* (the inventory is
:data:`INVENTORY`, also in ``docs/SAFETY.md``) get a guard kernel in front of the value they
trust. A guard reads every element once, and

- writes a *safe* copy the operator reads instead (an index normalised to ``[0, extent)``
  after the negative-index rule, an out-of-range index replaced by 0; a zero divisor
  replaced by 1), so the operator itself never leaves its buffers, whatever the input;
- writes a 3-element int64 *status*: the number of bad elements, the flat position of the
  first, and its value. The runtime reads the status right after the guard's call and raises
  ``InputError`` naming the input, the node, the position and the valid range (the site
  description travels as the guard kernel's ``lepton.guard`` attribute into the plan).

Before::

    i = R.where(R.less(ids, 0), R.add(ids, 1000), ids)   # the importer's negative-index rule
    y = R.take(table, i, axis=0, mode="fast")

After::

    g = R.call_tir(guard_index, (R.reshape(ids, [64]),), [R.Tensor([64], "int64"),
                                                          R.Tensor([3], "int64")])
    y = R.take(table, R.reshape(g[0], [4, 16]), axis=0, mode="fast")

Integer division (``divide``, ``floor_divide``, ``mod``, ``floor_mod``) by a non-constant
divisor is guarded the same way, and ``x / -1`` (which the CPU traps on for ``x = INT_MIN``)
computes as ``-x`` (``x % -1`` as 0): the wrapped result onnxruntime and numpy give. A
constant divisor holding a zero is refused at build time. Operators with no value-dependent
access are left unchanged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lepton_compiler.errors import CompileError

GUARD_ATTR = "lepton.guard"  # on a guard prim_func: the JSON description of its site
_OPAQUE = 8  # relax OpPatternKind.kOpaque: FuseOps leaves the guard alone

#: Every operator whose memory access or arithmetic depends on input values, and how each is
#: made safe. ``checked``: a guard validates the values at run time; ``static``: the values
#: reach only shapes or attributes, fixed at build time (a data-dependent shape is refused at
#: build); ``bounded``: the kernel clamps or compares, so no value can address memory.
INVENTORY: dict[str, tuple[str, str]] = {
    "relax.take": ("checked", "Gather, torch embedding / index_select: each index in "
                   "[-n, n) of its axis (negative counts from the end)"),
    "relax.gather_elements": ("checked", "GatherElements, torch.gather: each index in "
                              "[-n, n) of the gathered axis"),
    "relax.gather_nd": ("checked", "GatherND: each index component in [-n, n) of the "
                        "dimension it selects"),
    "relax.scatter_elements": ("checked", "ScatterElements, torch.scatter: each index in "
                               "[-n, n) of the scattered axis (a write: checked the same way)"),
    "relax.scatter_nd": ("checked", "ScatterND: each index component in [-n, n) of its "
                         "dimension"),
    "relax.divide": ("checked", "integer Div: divisor != 0; INT_MIN / -1 wraps"),
    "relax.floor_divide": ("checked", "integer floor division: divisor != 0"),
    "relax.mod": ("checked", "integer Mod (fmod=1), torch remainder on ints: divisor != 0"),
    "relax.floor_mod": ("checked", "integer Mod (fmod=0): divisor != 0"),
    "relax.one_hot": ("bounded", "OneHot: each output element compares its index with the "
                      "position; no index is used as an address"),
    "relax.image.resize2d": ("bounded", "Resize: source coordinates are clamped to the "
                             "image; scales and sizes are static"),
    "relax.image.grid_sample": ("bounded", "GridSample: samples outside the image read the "
                                "padding value after an in-bounds test"),
    "relax.topk": ("static", "TopK: refused at import (no host sort kernel); k would be a "
                   "build-time constant"),
    "relax.dynamic_strided_slice": ("static", "Slice with run-time starts/ends: its output "
                                    "shape depends on data and is refused at build time"),
    "relax.arange": ("static", "Range: start/limit/delta must be build-time constants (a "
                     "graph input that sets them is pinned to its example value and checked "
                     "at every call)"),
    "relax.tile": ("static", "Tile: repeats must be build-time constants"),
    "relax.repeat": ("static", "Expand/repeat: shapes must be build-time constants"),
    "lepton NPU kernels": ("static", "GEMM, requantize and vector kernels address their "
                           "buffers through loop bounds fixed at build time; the plan's "
                           "tensor offsets are checked against the arena when loaded"),
}

_INDEX_OPS = ("relax.take", "relax.gather_elements", "relax.gather_nd",
              "relax.scatter_elements", "relax.scatter_nd")
_DIVISION_OPS = ("relax.divide", "relax.floor_divide", "relax.mod", "relax.floor_mod")
_ONNX_NAMES = {"relax.take": "Gather", "relax.gather_elements": "GatherElements",
               "relax.gather_nd": "GatherND", "relax.scatter_elements": "ScatterElements",
               "relax.scatter_nd": "ScatterND", "relax.divide": "Div",
               "relax.floor_divide": "Div", "relax.mod": "Mod", "relax.floor_mod": "Mod"}


@dataclass
class GuardSite:
    """What a guard checks, for the runtime's error message (the ``lepton.guard`` JSON)."""

    check: str                 # "index" | "divisor"
    op: str                    # the guarded Relax op, e.g. "take"
    node: str                  # the model's node name when known, else "<op> #<n>"
    tensor: str                # the checked tensor: a graph input's name, else a description
    is_input: bool             # whether ``tensor`` is a graph input
    shape: list[int]           # the checked tensor's shape (positions are reported in it)
    extents: list[int] = field(default_factory=list)  # index: the bound of each component
    negative: bool = True      # index: whether [-n, 0) counts from the end

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


MAX_INDEX_DEPTH = 8  # index vectors (GatherND/ScatterND) up to this many components


def index_guard_func(n: int, dtype: str, extents: list[int], negative: bool,
                     site: GuardSite) -> Any:
    """``(X[n]) -> (SAFE[n], STATUS[3])``: element ``i`` is component ``i % len(extents)`` of
    an index vector and must lie in ``[-e, e)`` (``[0, e)`` when not ``negative``). The
    extents are baked into the kernel (no constant argument, nothing to pre-pack)."""
    from tvm.script import tirx as T

    m = len(extents)
    if not 1 <= m <= MAX_INDEX_DEPTH:
        raise CompileError(f"{site.node}: index vectors of {m} components are not supported "
                           f"(at most {MAX_INDEX_DEPTH})")
    e0, e1, e2, e3, e4, e5, e6, e7 = (int(e) for e in [*extents, *[extents[-1]] * (8 - m)])
    lowest = 1 if negative else 0  # multiplier of -e for the lower bound

    @T.prim_func(private=True, s_tir=True)
    def guard(X: T.Buffer((n,), dtype), SAFE: T.Buffer((n,), dtype),
              STATUS: T.Buffer((3,), "int64")):
        T.func_attr({"tir.noalias": True})
        for _ in range(1):  # one opaque block under the root: a serial pass over the values
          with T.sblock("guard"):
            T.reads(X[0:n])
            T.writes(SAFE[0:n], STATUS[0:3])
            STATUS[0] = T.int64(0)
            STATUS[1] = T.int64(-1)
            STATUS[2] = T.int64(0)
            for i in range(n):
                v = T.Cast("int64", X[i])
                c = i % m
                e = T.if_then_else(c == 0, T.int64(e0), T.if_then_else(
                    c == 1, T.int64(e1), T.if_then_else(c == 2, T.int64(e2), T.if_then_else(
                        c == 3, T.int64(e3), T.if_then_else(c == 4, T.int64(e4), T.if_then_else(
                            c == 5, T.int64(e5), T.if_then_else(
                                c == 6, T.int64(e6), T.int64(e7))))))))
                if v < e * T.int64(-lowest) or v >= e:
                    if STATUS[0] == T.int64(0):
                        STATUS[1] = T.Cast("int64", i)
                        STATUS[2] = v
                    STATUS[0] = STATUS[0] + T.int64(1)
                    SAFE[i] = T.Cast(dtype, 0)
                else:
                    SAFE[i] = T.Cast(dtype, T.if_then_else(v < T.int64(0), v + e, v))

    return _finish(guard, site)


def divisor_guard_func(n: int, dtype: str, site: GuardSite) -> Any:
    """``(X[n]) -> (SAFE[n], STATUS[3])``: every divisor must be non-zero (a zero becomes 1)."""
    from tvm.script import tirx as T

    @T.prim_func(private=True, s_tir=True)
    def guard(X: T.Buffer((n,), dtype), SAFE: T.Buffer((n,), dtype),
              STATUS: T.Buffer((3,), "int64")):
        T.func_attr({"tir.noalias": True})
        for _ in range(1):
          with T.sblock("guard"):
            T.reads(X[0:n])
            T.writes(SAFE[0:n], STATUS[0:3])
            STATUS[0] = T.int64(0)
            STATUS[1] = T.int64(-1)
            STATUS[2] = T.int64(0)
            for i in range(n):
                if X[i] == T.Cast(dtype, 0):
                    if STATUS[0] == T.int64(0):
                        STATUS[1] = T.Cast("int64", i)
                    STATUS[0] = STATUS[0] + T.int64(1)
                    SAFE[i] = T.Cast(dtype, 1)
                else:
                    SAFE[i] = X[i]

    return _finish(guard, site)


def _finish(func: Any, site: GuardSite) -> Any:
    return func.with_attr("op_pattern", _OPAQUE).with_attr(GUARD_ATTR, site.to_json())


def is_guard(func: Any) -> bool:
    """Whether a prim_func is a guard kernel (never scheduled, tuned or fused)."""
    return func.attrs is not None and GUARD_ATTR in func.attrs


def guard_sites(kernels: dict[str, Any]) -> dict[str, dict]:
    """Kernel name -> its site description, for the guards among ``kernels``."""
    return {name: json.loads(str(f.attrs[GUARD_ATTR])) for name, f in kernels.items()
            if is_guard(f)}


def _is_int(ty: Any) -> bool:
    dtype = str(getattr(ty, "dtype", ""))
    return dtype.startswith(("int", "uint"))


def _shape(expr: Any) -> list[int] | None:
    from lepton_compiler import tvm_compat

    try:
        return list(tvm_compat.shape_of(expr.ty))
    except (ValueError, AttributeError):
        return None


def GuardValues(node_names: dict[str, list[str]] | None = None,
                negative_indices: bool = True) -> Any:
    """The module pass ``lepton.GuardValues`` (see the module docstring).

    ``node_names``: for models whose node names the importer does not carry into Relax, the
    model's node names per ONNX op type in graph order (e.g. ``{"Gather": ["lookup"]}``);
    used when the count of guarded ops of that type matches, else sites are numbered.
    ``negative_indices``: whether an index in ``[-n, 0)`` counts from the end (ONNX) or is
    invalid (PyTorch's embedding, index_select and gather refuse it).
    """
    import tvm
    from tvm import relax

    names = node_names or {}

    @tvm.transform.module_pass(opt_level=0, name="lepton.GuardValues")
    def transform(mod: Any, _ctx: Any) -> Any:
        if "main" not in [gv.name_hint for gv in mod.functions]:
            return mod
        counts: dict[str, int] = {}

        def count(call: Any) -> None:
            if isinstance(call, relax.Call) and getattr(call.op, "name", "") in \
                    (*_INDEX_OPS, *_DIVISION_OPS) and _guarded(call):
                kind = _ONNX_NAMES[call.op.name]
                counts[kind] = counts.get(kind, 0) + 1

        relax.analysis.post_order_visit(mod["main"].body, count)
        usable = {k: v for k, v in names.items() if len(v) == counts.get(k, -1)}
        mutator = _Guarder(mod, usable, negative_indices)
        main = mutator.visit_expr(mod["main"])
        mod = mutator.builder_.get()
        mod["main"] = main
        return relax.transform.Normalize()(mod)

    return transform


def _guarded(call: Any) -> bool:
    """Whether ``call`` trusts a value that is not a build-time constant."""
    from lepton_compiler import tvm_compat

    op = call.op.name
    if op in _INDEX_OPS:
        return not tvm_compat.is_constant(call.args[1])
    if op in _DIVISION_OPS:
        return _is_int(call.ty) and not tvm_compat.is_constant(call.args[1])
    return False


def _make_guarder():
    from tvm import relax

    from lepton_compiler import tvm_compat

    @relax.expr_functor.mutator
    class Guarder(relax.PyExprMutator):
        def __init__(self, mod: Any, names: dict[str, list[str]], negative: bool) -> None:
            super().__init__(mod)
            self.names = names
            self.negative = negative
            self.seen: dict[str, int] = {}
            self.params: set[str] = set()

        def visit_function_(self, func: Any) -> Any:
            self.params = {tvm_compat.param_name(p) for p in func.params}
            return super().visit_function_(func)

        def visit_call_(self, op: Any) -> Any:
            call = self.visit_expr_post_order(op)
            name = getattr(call.op, "name", "")
            if name in _DIVISION_OPS and _is_int(call.ty):
                _refuse_constant_zero(call)
            if name not in (*_INDEX_OPS, *_DIVISION_OPS) or not _guarded(call):
                return call
            kind = _ONNX_NAMES[name]
            k = self.seen.get(kind, 0)
            self.seen[kind] = k + 1
            listed = self.names.get(kind)
            short = name.removeprefix("relax.")
            node = f"{kind} '{listed[k]}'" if listed else f"{short} #{k + 1}"
            if name in _INDEX_OPS:
                return self.guard_index(call, short, node)
            return self.guard_divisor(call, short, node)

        def describe(self, expr: Any) -> tuple[str, bool]:
            """A graph input's name (through casts and reshapes), else a description."""
            seen = expr
            for _ in range(8):
                if isinstance(seen, relax.Var) and tvm_compat.param_name(seen) in self.params:
                    return tvm_compat.param_name(seen), True
                bound = self.lookup_binding(seen) if isinstance(seen, relax.Var) else None
                if isinstance(bound, relax.Call) and getattr(bound.op, "name", "") in (
                        "relax.astype", "relax.reshape", "relax.squeeze",
                        "relax.expand_dims"):
                    seen = bound.args[0]
                    continue
                break
            what = getattr(getattr(self.lookup_binding(seen), "op", None), "name", "")
            return (f"a tensor computed by {what.removeprefix('relax.')}" if what
                    else "a computed tensor"), False

        def constant_of(self, expr: Any) -> np.ndarray | None:
            """The value of a constant, through variable bindings and casts."""
            for _ in range(4):
                if tvm_compat.is_constant(expr):
                    return np.asarray(tvm_compat.constant_numpy(expr))
                bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
                if not (isinstance(bound, relax.Call) and getattr(bound.op, "name", "") ==
                        "relax.astype"):
                    return None
                expr = bound.args[0]
            return None

        def unwrap_negative_rule(self, index: Any, extents: list[int]) -> Any:
            """``where(less(x, 0), add(x, n), x)`` with ``n`` the extents (the ONNX importer's
            negative-index rule) -> ``x``: the guard applies the same rule to the raw value,
            so it can report the value the user passed."""
            def bound_call(expr: Any, op: str) -> Any:
                value = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
                ok = isinstance(value, relax.Call) and getattr(value.op, "name", "") == op
                return value if ok else None

            where = bound_call(index, "relax.where")
            if where is None:
                return index
            cond, added, raw = where.args
            less, add = bound_call(cond, "relax.less"), bound_call(added, "relax.add")
            if less is None or add is None or not less.args[0].same_as(raw) or \
                    not add.args[0].same_as(raw):
                return index
            zero, shift = self.constant_of(less.args[1]), self.constant_of(add.args[1])
            if zero is None or shift is None or np.any(zero != 0):
                return index
            flat = shift.reshape(-1)
            if flat.size == 1 and len(extents) == 1 and int(flat[0]) == extents[0]:
                return raw
            if flat.size == len(extents) and [int(v) for v in flat] == list(extents):
                return raw
            return index

        def emit_guard(self, func: Any, value: Any) -> Any:
            shape = _shape(value)
            n = int(np.prod(shape)) if shape else 1
            dtype = str(value.ty.dtype)
            flat = self.builder_.emit(relax.op.reshape(value, [n]))
            gvar = self.builder_.add_func(func, "lepton_guard")
            out = [relax.TensorType([n], dtype), relax.TensorType([3], "int64")]
            result = self.builder_.emit(relax.call_tir(gvar, [flat], out_ty=out))
            safe = self.builder_.emit(relax.TupleGetItem(result, 0))
            return self.builder_.emit(relax.op.reshape(safe, shape))

        def guard_index(self, call: Any, short: str, node: str) -> Any:
            data, index = call.args[0], call.args[1]
            data_shape, index_shape = _shape(data), _shape(index)
            if data_shape is None or index_shape is None:
                return call  # symbolic shapes never reach the plan
            rank = len(data_shape)
            if short == "gather_nd" or short == "scatter_nd":
                batch = int(call.attrs.batch_dims) if short == "gather_nd" else 0
                depth = index_shape[-1]
                extents = data_shape[batch:batch + depth]
            else:
                axis = int(call.attrs.axis) if call.attrs.axis is not None else 0
                axis = axis + rank if axis < 0 else axis
                extents = [data_shape[axis]]
            negative = self.negative
            raw = self.unwrap_negative_rule(index, [int(e) for e in extents]) if negative \
                else index
            tensor, is_input = self.describe(raw)
            site = GuardSite("index", short, node, tensor, is_input, _shape(raw) or [],
                             [int(e) for e in extents], negative)
            n = int(np.prod(_shape(raw))) if _shape(raw) else 1
            func = index_guard_func(n, str(raw.ty.dtype), site.extents, negative, site)
            safe = self.emit_guard(func, raw)
            if not safe.ty.dtype == index.ty.dtype:
                safe = self.builder_.emit(relax.op.astype(safe, index.ty.dtype))
            return relax.Call(call.op, [data, safe, *call.args[2:]], call.attrs, call.ty_args)

        def guard_divisor(self, call: Any, short: str, node: str) -> Any:
            dividend, divisor = call.args[0], call.args[1]
            if _shape(divisor) is None:
                return call
            tensor, is_input = self.describe(divisor)
            site = GuardSite("divisor", short, node, tensor, is_input, _shape(divisor) or [])
            n = int(np.prod(_shape(divisor))) if _shape(divisor) else 1
            dtype = str(divisor.ty.dtype)
            safe = self.emit_guard(divisor_guard_func(n, dtype, site), divisor)
            if not dtype.startswith("int"):
                return relax.Call(call.op, [dividend, safe], call.attrs, call.ty_args)
            # x / -1 traps on INT_MIN: divide by 1 and negate instead (x % -1 is 0); the
            # negation wraps, giving INT_MIN / -1 = INT_MIN like onnxruntime and numpy.
            minus_one = self.builder_.emit(relax.op.equal(safe, relax.const(-1, dtype)))
            divisor = self.builder_.emit(relax.op.where(minus_one, relax.const(1, dtype),
                                                        safe))
            result = self.builder_.emit(relax.Call(call.op, [dividend, divisor], call.attrs,
                                                   call.ty_args))
            if short in ("divide", "floor_divide"):
                special = self.builder_.emit(relax.op.negative(dividend))
            else:
                special = relax.const(0, str(call.ty.dtype))
            return relax.op.where(minus_one, special, result)

    return Guarder


def _Guarder(mod: Any, names: dict[str, list[str]], negative: bool) -> Any:
    return _make_guarder()(mod, names, negative)


def _refuse_constant_zero(call: Any) -> None:
    from lepton_compiler import tvm_compat

    divisor = call.args[1]
    if tvm_compat.is_constant(divisor) and not np.all(tvm_compat.constant_numpy(divisor)):
        raise CompileError(
            f"{call.op.name.removeprefix('relax.')}: the model divides integers by a constant "
            "that holds 0 (undefined); fix the divisor in the model")
