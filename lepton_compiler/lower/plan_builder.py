"""Turn a fused Relax ``main`` (a flat chain of call_tir) into an executable plan.

The plan lists tensors (inputs, outputs, arena intermediates, weights, reshape views), the
ordered kernel calls over them, and the arena size from :mod:`memory_plan`. Weights are
packed into one little-endian blob at aligned offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_compiler import tvm_compat
from lepton_compiler.errors import CompileError
from lepton_compiler.lower.memory_plan import Interval, find_overlap, plan_arena
from lepton_runtime.format import ALIGNMENT, DTYPES, PLAN_VERSION


@dataclass
class _Tensor:
    shape: tuple[int, ...]
    dtype: str
    kind: str
    index: int = 0
    base: int = -1
    offset: int = 0
    producer: int = -1  # call index that writes it
    last_use: int = -1

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class BuiltPlan:
    """The plan as JSON-ready data plus the packed weights."""

    plan: dict
    weights: bytes
    kernel_names: list[str] = field(default_factory=list)


class _Builder:
    def __init__(self, guards: dict[str, dict]) -> None:
        self.guards = guards
        self.tensors: list[_Tensor] = []
        self.calls: list[dict] = []
        self.values: dict[Any, Any] = {}  # relax Var -> tensor id or tuple of ids
        self.weight_ids: list[tuple[Any, int]] = []  # (constant, tensor id), matched by same_as
        self.weight_blobs: list[tuple[int, bytes]] = []
        self.weight_size = 0

    def new(self, ty: Any, kind: str, **kw: Any) -> int:
        try:
            shape = tvm_compat.shape_of(ty)
        except ValueError as err:
            raise CompileError(f"only static shapes are supported: {err}") from None
        dtype = tvm_compat.dtype_of(ty)
        if dtype not in DTYPES:
            raise CompileError(f"the model computes a {dtype} tensor {list(shape)}, a dtype "
                               f"the Lepton runtime does not hold ({', '.join(DTYPES)}); "
                               "convert the model to float32")
        self.tensors.append(_Tensor(shape, dtype, kind, **kw))
        return len(self.tensors) - 1

    def constant(self, const: Any) -> int:
        for seen, tid in self.weight_ids:
            if seen.same_as(const):  # Python wrappers are transient: compare the IR objects
                return tid
        array = np.ascontiguousarray(tvm_compat.constant_numpy(const))
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        offset = (self.weight_size + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
        self.weight_size = offset + len(data)
        self.weight_blobs.append((offset, data))
        tid = self.new(const.ty, "weight", offset=offset)
        self.weight_ids.append((const, tid))
        return tid

    def arg(self, expr: Any, call_index: int) -> int:

        if tvm_compat.is_constant(expr):
            tid = self.constant(expr)
        elif expr in self.values and isinstance(self.values[expr], int):
            tid = self.values[expr]
        else:
            raise CompileError(f"unsupported kernel argument {type(expr).__name__}: {expr}")
        self.touch(tid, call_index)
        return tid

    def touch(self, tid: int, call_index: int) -> None:
        t = self.tensors[tid]
        t.last_use = max(t.last_use, call_index)
        if t.kind == "view":
            self.touch(t.base, call_index)

    def binding(self, var: Any, value: Any) -> None:
        from tvm import relax

        call_tir = tvm_compat.call_tir_op()
        reshape = tvm_compat.reshape_op()
        if isinstance(value, relax.Call) and value.op.same_as(call_tir):
            self.call(var, value)
        elif isinstance(value, relax.Call) and value.op.same_as(reshape):
            src = value.args[0]
            base = self.arg(src, len(self.calls) - 1)
            while self.tensors[base].kind == "view":
                base = self.tensors[base].base
            self.values[var] = self.new(var.ty, "view", base=base)
        elif isinstance(value, relax.Tuple):
            self.values[var] = tuple(self.value_of(f) for f in value.fields)
        elif isinstance(value, relax.TupleGetItem):
            self.values[var] = self.value_of(value.tuple_value)[value.index]
        elif isinstance(value, relax.Var) or tvm_compat.is_constant(value):
            self.values[var] = self.value_of(value)
        else:
            raise CompileError(
                f"cannot plan binding {var.name} = {type(value).__name__}; expected call_tir"
            )

    def value_of(self, expr: Any) -> Any:
        from tvm import relax

        if tvm_compat.is_constant(expr):
            return self.constant(expr)
        if isinstance(expr, relax.Tuple):
            return tuple(self.value_of(f) for f in expr.fields)
        if expr in self.values:
            return self.values[expr]
        raise CompileError(f"value {expr} is used before it is defined")

    def call(self, var: Any, value: Any) -> None:
        index = len(self.calls)
        kernel = value.args[0].name_hint
        args = [self.arg(a, index) for a in value.args[1].fields]
        out_ty = var.ty
        if isinstance(out_ty, tvm_compat.tuple_type_class()):
            outs = tuple(
                self.new(ty, "arena", producer=index, last_use=index) for ty in out_ty.fields
            )
            self.values[var] = outs
        else:
            outs = (self.new(out_ty, "arena", producer=index, last_use=index),)
            self.values[var] = outs[0]
        entry = {"kernel": kernel, "args": args + list(outs), "ops": [kernel],
                 "var": tvm_compat.param_name(var)}
        if kernel in self.guards:  # the runtime reads its status output right after the call
            entry["guard"] = {**self.guards[kernel], "status": outs[-1]}
        self.calls.append(entry)

    def outputs(self, ret: Any) -> list[int]:
        value = self.value_of(ret)
        flat: list[int] = []

        def walk(v: Any) -> None:
            if isinstance(v, tuple):
                for item in v:
                    walk(item)
            else:
                flat.append(v)

        walk(value)
        return flat


def build_plan(main: Any, input_names: list[str], output_names: list[str],
               guards: dict[str, dict] | None = None,
               pinned: dict[str, np.ndarray] | None = None) -> BuiltPlan:
    """Walk ``main`` and produce the plan and weights blob. ``guards``: the guard kernels'
    site descriptions by kernel name (``passes.value_guards.guard_sites``); their calls
    carry a ``guard`` entry that names the status tensor. ``pinned``: inputs fixed at build
    time (input name -> value); each value is stored as a weight that the runtime compares
    every call's input with (the plan's ``pins``)."""
    from tvm import relax

    b = _Builder(guards or {})
    if len(main.params) != len(input_names):
        raise CompileError(
            f"main takes {len(main.params)} inputs but the model declares {len(input_names)}"
        )
    for i, param in enumerate(main.params):
        b.values[param] = b.new(param.ty, "input", index=i)
    body = main.body
    if not isinstance(body, relax.SeqExpr):
        raise CompileError("main must be a sequence of bindings")
    for block in body.blocks:
        for binding in block.bindings:
            b.binding(binding.var, binding.value)
    outputs = b.outputs(body.body)
    pins = []
    for k, name in enumerate(input_names):
        if pinned and name in pinned:
            value = np.asarray(pinned[name])
            pins.append({"input": k, "tensor": b.constant(relax.const(value, str(value.dtype)))})
    if len(output_names) != len(outputs):
        output_names = [f"output{i}" for i in range(len(outputs))]
    end = len(b.calls)
    for slot, tid in enumerate(outputs):
        t = b.tensors[tid]
        if t.kind == "arena" and not any(o.kind == "output" and o.index == slot
                                         for o in b.tensors) and tid not in outputs[:slot]:
            t.kind, t.index = "output", slot
        else:
            b.touch(tid, end)
    arena = [i for i, t in enumerate(b.tensors) if t.kind == "arena"]
    intervals = [Interval(b.tensors[i].nbytes, b.tensors[i].producer, b.tensors[i].last_use)
                 for i in arena]
    offsets, arena_bytes = plan_arena(intervals)
    clash = find_overlap(intervals, offsets)  # invariant: live tensors never share bytes
    if clash is not None:
        raise CompileError(f"memory plan overlaps live tensors {arena[clash[0]]} and "
                           f"{arena[clash[1]]}; this is a compiler bug, please report it")
    for i, off in zip(arena, offsets, strict=True):
        b.tensors[i].offset = off
    weights = bytearray(b.weight_size)
    for offset, data in b.weight_blobs:
        weights[offset : offset + len(data)] = data
    tensors_json = []
    for t in b.tensors:
        entry: dict[str, Any] = {"shape": list(t.shape), "dtype": t.dtype, "kind": t.kind}
        if t.kind in ("arena", "weight"):
            entry["offset"] = t.offset
        if t.kind in ("input", "output"):
            entry["index"] = t.index
        if t.kind == "view":
            entry["base"] = t.base
        tensors_json.append(entry)
    plan = {
        "version": PLAN_VERSION,
        "arena_bytes": arena_bytes,
        "tensors": tensors_json,
        "calls": b.calls,
        "inputs": [{"name": n, "tensor": i} for i, n in enumerate(input_names)],
        "outputs": [{"name": n, "tensor": t} for n, t in zip(output_names, outputs, strict=True)],
    }
    if pins:
        plan["pins"] = pins
    return BuiltPlan(plan, bytes(weights), sorted({c["kernel"] for c in b.calls}))


def check_signatures(plan: dict, kernels: dict[str, Any]) -> None:
    """Prove at build time that every call hands each kernel exactly the buffers it was
    compiled for (same element count, dtype and rank), so no kernel's static loop bounds can
    reach past a plan tensor; a mismatch is a compiler bug (``CompileError``)."""
    tensors = plan["tensors"]
    for n, call in enumerate(plan["calls"]):
        func = kernels[call["kernel"]]
        buffers = list(func.params)  # TVM 0.27: each parameter carries its buffer
        if len(buffers) != len(call["args"]):
            raise CompileError(f"call {n} passes {len(call['args'])} tensors to kernel "
                               f"{call['kernel']}, which takes {len(buffers)}; this is a "
                               "compiler bug, please report it")
        for buf, tid in zip(buffers, call["args"], strict=True):
            t = tensors[tid]
            shape = [int(d) for d in buf.shape]
            if int(np.prod(shape, dtype=np.int64)) != int(np.prod(t["shape"], dtype=np.int64)) \
                    or str(buf.dtype) != t["dtype"]:
                raise CompileError(
                    f"call {n} hands kernel {call['kernel']} tensor {tid} "
                    f"({t['dtype']}{t['shape']}) for its buffer {buf.name} "
                    f"({buf.dtype}{shape}); this is a compiler bug, please report it")
