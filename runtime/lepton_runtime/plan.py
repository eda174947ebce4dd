"""Validation of an artifact's execution plan before anything runs from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import format as fmt
from .errors import ArtifactError


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the plan: its shape, dtype and where its bytes live."""

    id: int
    shape: tuple[int, ...]
    dtype: str
    kind: str
    offset: int = 0
    index: int = 0
    base: int = -1

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Guard:
    """A guard kernel's site: what it checks, where, and the tensor holding its verdict.

    The guard writes ``status = [bad elements, flat position of the first, its value]``;
    :meth:`message` turns a non-zero status into the user's error text.
    """

    check: str                    # "index" | "divisor"
    op: str                       # the guarded operator, e.g. "take"
    node: str                     # the model's node, e.g. "Gather 'lookup'"
    tensor: str                   # the checked tensor (an input's name when is_input)
    is_input: bool
    shape: tuple[int, ...]        # the checked tensor's shape; positions index into it
    extents: tuple[int, ...]      # index checks: the size of each indexed dimension
    negative: bool                # index checks: whether [-n, 0) counts from the end
    status: int                   # tensor id of the int64[3] status

    def describe(self) -> str:
        """What this guard checks, in one line."""
        where = f"input {self.tensor!r}" if self.is_input else self.tensor
        if self.check == "divisor":
            return f"{where}: divisor of {self.node} ({self.op}) is non-zero"
        ranges = ", ".join(f"{-e if self.negative else 0}..{e - 1}" for e in self.extents)
        return f"{where}: index of {self.node} ({self.op}) in {ranges}"

    def message(self, status: np.ndarray) -> str:
        count, flat, value = (int(v) for v in status[:3])
        size = math.prod(self.shape)
        position = list(np.unravel_index(flat, self.shape)) if 0 <= flat < size and \
            self.shape else [flat]
        where = f"input {self.tensor!r}" if self.is_input else \
            f"{self.tensor} (an input of {self.node})"
        more = f"; {count} elements are invalid" if count > 1 else ""
        if self.check == "divisor":
            return (f"{where}: divisor 0 at position {[int(p) for p in position]} of "
                    f"{self.node} ({self.op}); integer division by zero is undefined{more}")
        extent = self.extents[flat % len(self.extents)] if self.extents else 0
        low = -extent if self.negative else 0
        return (f"{where}: index {value} at position {[int(p) for p in position]} is out of "
                f"range for {self.node} ({self.op} over a dimension of size {extent}); valid "
                f"indices are {low}..{extent - 1}{more}")


@dataclass(frozen=True)
class Call:
    """One kernel invocation: a kernel name and the tensor ids it takes, outputs last.

    ``sim`` holds the compiler's static sim figures of an NPU kernel (prologue_cycles,
    useful_macs, sram_<scope>_bytes); empty for host kernels. ``guard``: set on a guard
    kernel, whose status the runtime checks right after the call.
    """

    kernel: str
    args: tuple[int, ...]
    ops: tuple[str, ...]
    sim: tuple[tuple[str, int], ...] = ()
    guard: Guard | None = None
    #: Argument tensors held in the NPU's SRAM during this call (cascading: sim mode counts
    #: the DMA transfers that touch them as staying on chip).
    resident: tuple[int, ...] = ()


@dataclass(frozen=True)
class Plan:
    """A validated plan: tensors, calls, graph inputs and outputs, arena size."""

    arena_bytes: int
    tensors: tuple[TensorSpec, ...]
    calls: tuple[Call, ...]
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[tuple[str, int], ...]
    #: (input position, weight tensor id): inputs fixed at build time to the weight's value.
    pins: tuple[tuple[int, int], ...] = ()


def _fail(path: Path, what: str) -> ArtifactError:
    return ArtifactError(f"{path}: invalid plan: {what}")


def _int(path: Path, value: object, what: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(path, f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _tensor(path: Path, i: int, raw: object) -> TensorSpec:
    if not isinstance(raw, dict):
        raise _fail(path, f"tensor {i} is not an object")
    shape = raw.get("shape")
    if not isinstance(shape, list):
        raise _fail(path, f"tensor {i} has no shape list")
    dims = tuple(_int(path, d, f"tensor {i} dimension") for d in shape)
    dtype = raw.get("dtype")
    if dtype not in fmt.DTYPES:
        raise _fail(path, f"tensor {i} has unsupported dtype {dtype!r}")
    kind = raw.get("kind")
    if kind not in fmt.TENSOR_KINDS:
        raise _fail(path, f"tensor {i} has unknown kind {kind!r}")
    return TensorSpec(
        id=i,
        shape=dims,
        dtype=dtype,
        kind=kind,
        offset=_int(path, raw.get("offset", 0), f"tensor {i} offset"),
        index=_int(path, raw.get("index", 0), f"tensor {i} index"),
        base=_int(path, raw.get("base", -1), f"tensor {i} base", minimum=-1),
    )


def _check_storage(path: Path, t: TensorSpec, tensors: list[TensorSpec], plan: dict,
                   weights_bytes: int) -> None:
    arena = plan["arena_bytes"]
    if t.kind in ("arena", "weight"):
        limit = arena if t.kind == "arena" else weights_bytes
        if t.offset % fmt.ALIGNMENT or t.offset + t.nbytes > limit:
            raise _fail(path, f"tensor {t.id} ({t.kind}) lies outside its buffer or is unaligned")
    if t.kind == "view":
        if not 0 <= t.base < t.id or tensors[t.base].kind == "view":
            raise _fail(path, f"view tensor {t.id} must refer to an earlier non-view tensor")
        if tensors[t.base].nbytes != t.nbytes or tensors[t.base].dtype != t.dtype:
            raise _fail(path, f"view tensor {t.id} does not match its base's size and dtype")


def _guard(path: Path, n: int, raw: object, args: tuple[int, ...],
           tensors: list[TensorSpec]) -> Guard | None:
    """A call's guard entry, checked so that reading its status stays inside the plan."""
    if raw is None:
        return None
    what = f"call {n} guard"
    if not isinstance(raw, dict) or raw.get("check") not in fmt.GUARD_CHECKS:
        raise _fail(path, f"{what} must be an object with check in {fmt.GUARD_CHECKS}")
    for key in ("op", "node", "tensor"):
        if not isinstance(raw.get(key), str):
            raise _fail(path, f"{what} {key} must be a string")
    for key in ("is_input", "negative"):
        if not isinstance(raw.get(key, False), bool):
            raise _fail(path, f"{what} {key} must be a boolean")
    shape = raw.get("shape")
    extents = raw.get("extents", [])
    if not isinstance(shape, list) or not isinstance(extents, list):
        raise _fail(path, f"{what} shape and extents must be lists")
    dims = tuple(_int(path, d, f"{what} dimension") for d in shape)
    bounds = tuple(_int(path, e, f"{what} extent") for e in extents)
    if raw["check"] == "index" and not bounds:
        raise _fail(path, f"{what} checks indices but names no extent")
    status = _int(path, raw.get("status"), f"{what} status")
    if status not in args[1:] or tensors[status].dtype != "int64" or \
            tensors[status].shape != (3,):
        raise _fail(path, f"{what} status must be an int64[3] output of the call")
    if not args or math.prod(tensors[args[0]].shape) != math.prod(dims):
        raise _fail(path, f"{what} shape does not match the checked tensor")
    return Guard(raw["check"], raw["op"], raw["node"], raw["tensor"],
                 raw.get("is_input", False), dims, bounds, raw.get("negative", False),
                 status)


def parse_plan(path: Path, plan: object, weights_bytes: int) -> Plan:
    """Check every field, index, offset and size of a plan; return it typed."""
    if not isinstance(plan, dict) or plan.get("version") not in fmt.SUPPORTED_PLAN_VERSIONS:
        raise _fail(path, "expected a plan object of version "
                    f"{' or '.join(map(str, fmt.SUPPORTED_PLAN_VERSIONS))}")
    _int(path, plan.get("arena_bytes"), "arena_bytes")
    raw_tensors = plan.get("tensors")
    if not isinstance(raw_tensors, list):
        raise _fail(path, "tensors must be a list")
    tensors: list[TensorSpec] = []
    for i, raw in enumerate(raw_tensors):
        tensors.append(_tensor(path, i, raw))
        _check_storage(path, tensors[-1], tensors, plan, weights_bytes)

    def tensor_ref(value: object, what: str) -> int:
        ref = _int(path, value, what)
        if ref >= len(tensors):
            raise _fail(path, f"{what} refers to missing tensor {ref}")
        return ref

    calls = []
    for n, raw in enumerate(plan.get("calls") or []):
        if not isinstance(raw, dict) or not isinstance(raw.get("kernel"), str):
            raise _fail(path, f"call {n} has no kernel name")
        args = tuple(tensor_ref(a, f"call {n} argument") for a in raw.get("args") or [])
        ops = tuple(str(op) for op in raw.get("ops") or [])
        sim = raw.get("sim") or {}
        if not isinstance(sim, dict):
            raise _fail(path, f"call {n} sim figures must be an object")
        figures = tuple(sorted((str(k), _int(path, v, f"call {n} sim {k}")) for k, v in
                               sim.items()))
        guard = _guard(path, n, raw.get("guard"), args, tensors)
        resident = tuple(tensor_ref(t, f"call {n} resident tensor")
                         for t in raw.get("resident") or [])
        if any(t not in args or tensors[t].kind not in ("arena", "view") for t in resident):
            raise _fail(path, f"call {n}: a resident tensor must be one of its arena arguments")
        calls.append(Call(raw["kernel"], args, ops, figures, guard, resident))

    def signature(key: str, kind: str) -> tuple[tuple[str, int], ...]:
        entries = plan.get(key)
        if not isinstance(entries, list):
            raise _fail(path, f"{key} must be a list")
        out = []
        for k, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise _fail(path, f"{key}[{k}] has no name")
            ref = tensor_ref(entry.get("tensor"), f"{key}[{k}]")
            if kind == "input" and (tensors[ref].kind != "input" or tensors[ref].index != k):
                raise _fail(path, f"input {entry['name']!r} must be input tensor {k}")
            out.append((entry["name"], ref))
        return tuple(out)

    inputs = signature("inputs", "input")
    outputs = signature("outputs", "output")
    output_slots = [t.index for t in tensors if t.kind == "output"]
    if sorted(output_slots) != sorted(set(output_slots)) or any(
        s >= len(outputs) for s in output_slots
    ):
        raise _fail(path, "output tensors must have distinct indices within the outputs")
    pins = []
    for k, raw in enumerate(plan.get("pins") or []):
        if not isinstance(raw, dict):
            raise _fail(path, f"pins[{k}] is not an object")
        position = _int(path, raw.get("input"), f"pins[{k}] input")
        ref = tensor_ref(raw.get("tensor"), f"pins[{k}] tensor")
        if position >= len(inputs):
            raise _fail(path, f"pins[{k}] names input {position}, which does not exist")
        given, value = tensors[inputs[position][1]], tensors[ref]
        if value.kind != "weight" or value.shape != given.shape or value.dtype != given.dtype:
            raise _fail(path, f"pins[{k}] must be a weight of input {position}'s shape and "
                        "dtype")
        pins.append((position, ref))
    return Plan(plan["arena_bytes"], tuple(tensors), tuple(calls), inputs, outputs,
                tuple(pins))


def parse_plans(path: Path, plan: object, weights_bytes: int) -> list[Plan]:
    """The plan and, for an artifact compiled for several input shapes, its ``variants``
    (each a whole plan over the same weights and kernels), checked to share one signature
    (input and output names and dtypes) with distinct input shapes."""
    first = parse_plan(path, plan, weights_bytes)
    raw = plan.get("variants") or [] if isinstance(plan, dict) else []
    if not isinstance(raw, list):
        raise _fail(path, "variants must be a list")
    plans = [first]
    for k, entry in enumerate(raw):
        if isinstance(entry, dict) and "variants" in entry:
            raise _fail(path, f"variant {k + 1} holds variants of its own")
        plans.append(parse_plan(path, entry, weights_bytes))

    def signature(p: Plan) -> tuple:
        return tuple((name, p.tensors[tid].dtype) for name, tid in p.inputs), \
            tuple((name, p.tensors[tid].dtype) for name, tid in p.outputs)

    shapes = set()
    for k, p in enumerate(plans):
        if signature(p) != signature(first):
            raise _fail(path, f"variant {k} has other inputs or outputs than variant 0")
        key = tuple(p.tensors[tid].shape for _, tid in p.inputs)
        if key in shapes:
            raise _fail(path, f"variant {k} repeats the input shapes {list(key)}")
        shapes.add(key)
    return plans
