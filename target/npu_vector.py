"""int8 layers on the NPU's vector unit: depthwise and grouped conv2d, max pooling, means,
residual adds and clamps.

The matrix engine runs convolutions and matrix products; what it cannot run well — a
depthwise conv reduces over one input channel per output — runs on the vector unit
(``spec.vector.lanes`` int32 lanes, one op per cycle), one block of lanes channels at a time,
with the layer's input streamed through the input SRAM in bands of rows (half of it, so the
next band loads while this one computes) and its weights and requantize terms resident.

A layer kind marks its kernel with :class:`VectorWork` (``kind.emit`` when the layer is placed
on the NPU); :func:`plan_vector` sizes the bands to the spec's SRAM (``SramOverflowError`` when
even one row does not fit: the placement rule :func:`fits_vector_unit` then keeps the layer on
the host); :func:`with_vector_sim` makes the kernel call its vector-unit instruction stream
(``lepton_v*`` in ``csrc/lepton_npu.c``), which in sim mode executes and counts every vector op
and DMA descriptor, and in fast mode declines so the kernel's host code (or, for depthwise,
the whole-layer ``lepton_dwconv_i8``) computes the same integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lepton_compiler.target.npu_schedule import SramOverflowError
from lepton_compiler.target.spec import LeptonSpec

#: Kernel attributes: the vector-unit op (a key of :data:`EXTERNS`) and its integer arguments.
VECTOR_ATTR = "lepton.vector"
VECTOR_ARGS_ATTR = "lepton.vector_args"

#: op -> (C function, names of its integer arguments, in order).
EXTERNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "conv": ("lepton_vconv_i8", ("groups", "n", "h", "w", "cin", "cout", "kh", "kw", "sh",
                                 "sw", "dh", "dw", "top", "left", "oh", "ow", "in_zp")),
    "maxpool": ("lepton_vmaxpool_i8", ("n", "h", "w", "c", "ph", "pw", "sh", "sw", "top",
                                       "left", "oh", "ow")),
    "mean": ("lepton_vmean_i8", ("outer", "count", "inner", "zi", "mult", "shift", "zo")),
    "add": ("lepton_vadd_i8", ("size", "za", "ma", "zb", "mb", "shift", "zo", "lo", "hi")),
    "clamp": ("lepton_vclamp_i8", ("size", "lo", "hi")),
    "lut": ("lepton_vlut_i8", ("size",)),
    "transpose": ("lepton_vtranspose_i8", ("size",)),
    "softmax": ("lepton_vsoftmax_i8", ("rows", "len", "recip_bits")),
    "layernorm": ("lepton_vlayernorm_i8", ("rows", "h", "eps_term", "shift")),
}
#: Ops whose kernel body is the C call itself, in both modes (no host loops to fall back to).
BOTH_MODES = ("softmax", "layernorm")
#: Arguments passed as int64.
WIDE_ARGS = ("size", "rows", "eps_term")



@dataclass(frozen=True)
class VectorWork:
    """One layer's work on the vector unit: the op and its integer arguments by name."""

    op: str
    args: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, op: str, **values: int) -> VectorWork:
        names = EXTERNS[op][1]
        missing = [n for n in names if n not in values]
        if missing or len(values) != len(names):
            raise ValueError(f"vector op {op}: arguments {sorted(values)} do not match "
                             f"{list(names)}")
        return cls(op, tuple((n, int(values[n])) for n in names))

    def mark(self, func: Any) -> Any:
        """``func`` carrying this work (read back by :func:`work_of`)."""
        return func.with_attr(VECTOR_ATTR, self.op).with_attr(
            VECTOR_ARGS_ATTR, [v for _, v in self.args])


def work_of(func: Any) -> VectorWork | None:
    """The :class:`VectorWork` a kernel was marked with, or None."""
    attrs = func.attrs
    if attrs is None or VECTOR_ATTR not in attrs:
        return None
    op = str(attrs[VECTOR_ATTR])
    values = [int(v) for v in attrs[VECTOR_ARGS_ATTR]]
    return VectorWork(op, tuple(zip(EXTERNS[op][1], values, strict=True)))


@dataclass(frozen=True)
class VectorPlan:
    """How a vector-unit layer streams through the SRAM: ``band`` output rows (conv, pooling),
    input rows (mean) or elements (add, clamp) per DMA descriptor."""

    work: VectorWork
    band: int
    sram: dict[str, int]        # peak bytes per SRAM scope
    first_loads: tuple[int, ...]  # bytes loaded before the first op can start
    useful_macs: int
    min_dram_bytes: int         # every operand read and every result written once


def _input_rows(rows: int, stride: int, dil: int, k: int, h: int) -> int:
    return min(h, (rows - 1) * stride + dil * (k - 1) + 1)


def _band_input_rows(y0: int, rows: int, stride: int, pad: int, dil: int, k: int,
                     h: int) -> int:
    """Input rows a band of output rows ``[y0, y0 + rows)`` reads inside the image (the C
    sim's ``band_input_rows``)."""
    first = max(0, y0 * stride - pad)
    last = min(h - 1, (y0 + rows - 1) * stride - pad + dil * (k - 1))
    return max(0, last - first + 1)


def _read_lines(out: int, stride: int, pad: int, dil: int, k: int, size: int) -> int:
    """How many input rows (or columns) of ``size`` the ``out`` output rows read."""
    return len({y * stride - pad + t * dil for y in range(out) for t in range(k)}
               & set(range(size)))


def _band_rows(need: Any, limit: int, most: int) -> int:
    """The largest band in [1, most] whose ``need(band)`` fits ``limit`` (0 if none)."""
    best = 0
    for band in range(1, most + 1):
        if need(band) > limit:
            break
        best = band
    return best


def _fail(work: VectorWork, scope: str, need: int, have: int) -> SramOverflowError:
    return SramOverflowError(
        f"vector-unit {work.op}: one band needs {need} bytes of {scope} SRAM but the spec's "
        f"{scope} SRAM holds {have}")


def plan_vector(work: VectorWork, spec: LeptonSpec) -> VectorPlan:
    """The band sizes of ``work`` on ``spec``; SramOverflowError when one row (or one vector)
    does not fit."""
    lanes, sram = spec.vector.lanes, spec.sram
    a = dict(work.args)
    if work.op in ("conv", "maxpool"):
        conv = work.op == "conv"
        cin_g = a["cin"] // a["groups"] if conv else 1
        cout_g = a["cout"] // a["groups"] if conv else 1
        channels = a["cout"] if conv else a["c"]
        chans = 0  # input channels one block of lanes output channels reads, at most
        for c0 in range(0, channels, lanes):
            cols = min(lanes, channels - c0)
            chans = max(chans, ((c0 + cols - 1) // cout_g - c0 // cout_g + 1) * cin_g)
        kh = a["kh"] if conv else a["ph"]
        dh = a["dh"] if conv else 1
        taps = kh * (a["kw"] if conv else a["pw"])
        weights = (taps * cin_g * lanes + 3 * 4 * lanes) if conv else 0
        if weights > sram.weight_bytes:
            raise _fail(work, "weight", weights, sram.weight_bytes)

        def need(band: int) -> int:
            return 2 * _input_rows(band, a["sh"], dh, kh, a["h"]) * a["w"] * chans

        band = min(_band_rows(need, sram.input_bytes, a["oh"]),
                   _band_rows(lambda b: 2 * b * a["ow"] * lanes, sram.accumulator_bytes,
                              a["oh"]))
        if band == 0:
            raise _fail(work, "input", need(1), sram.input_bytes)
        first_rows = _band_input_rows(0, band, a["sh"], a["top"], dh, kh, a["h"])
        cols = min(lanes, channels)
        first_chans = ((cols - 1) // cout_g + 1) * cin_g
        pixels_out = a["n"] * a["oh"] * a["ow"]
        macs = pixels_out * channels * taps * cin_g if conv else 0
        read_rows = _read_lines(a["oh"], a["sh"], a["top"], dh, kh, a["h"])
        read_cols = _read_lines(a["ow"], a["sw"], a["left"], a["dw"] if conv else 1,
                                a["kw"] if conv else a["pw"], a["w"])
        in_bytes = a["n"] * read_rows * read_cols * (a["cin"] if conv else a["c"])
        w_bytes = taps * cin_g * channels + 12 * channels if conv else 0
        return VectorPlan(work, band,
                          {"input": need(band), "weight": weights,
                           "accumulator": 2 * band * a["ow"] * lanes},
                          ((taps * cin_g + 12) * cols if conv else 0,
                           first_rows * a["w"] * first_chans),
                          macs, in_bytes + w_bytes + pixels_out * channels)
    if work.op == "mean":
        inner, count = a["inner"], a["count"]
        if inner * 4 > sram.accumulator_bytes:
            raise _fail(work, "accumulator", inner * 4, sram.accumulator_bytes)
        band = min(count, sram.input_bytes // 2 // max(inner, 1))
        if band == 0:
            raise _fail(work, "input", 2 * inner, sram.input_bytes)
        return VectorPlan(work, band, {"input": 2 * band * inner, "weight": 0,
                                       "accumulator": inner * 4},
                          (band * inner,), 0, a["outer"] * (count + 1) * inner)
    if work.op in ("softmax", "layernorm"):  # rows of the last axis, lanes rows at a time
        length = a["len"] if work.op == "softmax" else a["h"]
        terms = 256 * 4 if work.op == "softmax" else length * 12
        if terms > sram.weight_bytes:
            raise _fail(work, "weight", terms, sram.weight_bytes)
        block = lanes * length
        if 2 * block > sram.input_bytes:
            raise _fail(work, "input", 2 * block, sram.input_bytes)
        if 2 * block > sram.accumulator_bytes:
            raise _fail(work, "accumulator", 2 * block, sram.accumulator_bytes)
        rows = a["rows"]
        return VectorPlan(work, lanes, {"input": 2 * block, "weight": terms,
                                        "accumulator": 2 * block},
                          (terms, min(rows, lanes) * length), 0,
                          terms + 2 * rows * length)
    if work.op in ("add", "clamp", "lut", "transpose"):
        operands = 2 if work.op == "add" else 1
        chunk = min(sram.input_bytes // (2 * operands), sram.accumulator_bytes // 2)
        chunk -= chunk % lanes
        if chunk == 0:
            raise _fail(work, "input", 2 * operands * lanes, sram.input_bytes)
        size = a["size"]
        first = min(chunk, size)
        table = 256 * 4 if work.op == "lut" else 0
        return VectorPlan(work, chunk, {"input": 2 * operands * chunk, "weight": table,
                                        "accumulator": 2 * chunk},
                          (table, *(first,) * operands), 0, table + (operands + 1) * size)
    raise ValueError(f"unknown vector-unit op {work.op!r}; known: {', '.join(EXTERNS)}")


def vector_sim_static(plan: VectorPlan, spec: LeptonSpec) -> dict[str, int]:
    """The compiler's static sim figures of a vector-unit kernel (as ``npu_schedule.
    sim_static`` for GEMM kernels): the loads double-buffering cannot hide, the useful MACs,
    the minimal DRAM traffic and the SRAM peaks."""
    return {"prologue_cycles": sum(spec.dma.cycles(b) for b in plan.first_loads if b > 0),
            "useful_macs": plan.useful_macs, "min_dram_bytes": plan.min_dram_bytes,
            **{f"sram_{scope}_bytes": need for scope, need in plan.sram.items()}}


def with_vector_sim(func: Any, plan: VectorPlan) -> Any:
    """``func`` (a kernel marked with ``plan.work``) calling its vector-unit instruction
    stream first; the kernel's own body runs when the call declines (fast mode)."""
    from tvm import tirx

    from lepton_compiler.target.npu_fast import FAST_ATTR, _call_first

    work = plan.work
    if work.op in BOTH_MODES:
        return func  # its body is the call (see extern_kernel)
    pointers = [p.data for p in func.params]
    values = _call_values(work)
    if work.op == "conv":  # a depthwise kernel with the fast path takes packed weights
        packed = int(func.attrs is not None and FAST_ATTR in func.attrs)
        ints = [packed, values[0], plan.band, *values[1:]]
    else:
        ints = [plan.band, *values]
    call = tirx.call_extern("int32", EXTERNS[work.op][0], *pointers, *ints)
    return _call_first(func, list(func.params), call, [], [])


def _call_values(work: VectorWork) -> list[Any]:
    from tvm import tirx

    return [tirx.const(v, "int64") if n in WIDE_ARGS else v for n, v in work.args]


def extern_kernel(work: VectorWork, params: list[tuple[str, tuple[int, ...], str]]) -> Any:
    """A kernel whose body is ``work``'s C call in both modes (:data:`BOTH_MODES`):
    parameters ``(name, shape, dtype)``, the output last; marked with ``work``."""
    from tvm import te, tirx

    from lepton_compiler.target.qkernels import opaque

    inputs = [te.placeholder(shape, dtype, name=name) for name, shape, dtype in params[:-1]]
    name, shape, dtype = params[-1]
    out = te.extern([shape], inputs, lambda ins, outs: tirx.call_extern(
        "int32", EXTERNS[work.op][0], *(b.data for b in ins), outs[0].data,
        *_call_values(work)), dtype=[dtype], name=name)
    return work.mark(opaque(te.create_prim_func([*inputs, out])))
