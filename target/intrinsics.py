"""Lepton NPU instructions as TVM tensor intrinsics, derived from the spec.

Each instruction is a ``TensorIntrin``: ``desc`` (its semantics as a TIR loop nest) and
``impl`` (a ``T.call_extern`` of the ``lepton_*`` C function in ``csrc/lepton_npu.c``).
Names come from :func:`intrinsic_names` only; registration is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from lepton_compiler.target.spec import LeptonSpec

GEMM_EXTERN = "lepton_gemm_i8"
REQUANT_EXTERN = "lepton_requant_i32_i8"
DMA_EXTERNS = {"load": "lepton_dma_load", "store": "lepton_dma_store"}
VECTOR_EXTERNS = {"max_i8": "lepton_vmax_i8", "add_i32": "lepton_vadd_i32"}
SRAM_SCOPES = {"input": 0, "weight": 1, "accumulator": 2}  # ids shared with lepton_npu.c


@dataclass(frozen=True)
class IntrinsicNames:
    """The registered names of a spec's intrinsics."""

    gemm: str
    requant: str


def intrinsic_names(spec: LeptonSpec, depth: int | None = None) -> IntrinsicNames:
    """Names of the spec's intrinsics: unique per spec fingerprint, spelled only here.

    ``depth`` is the reduction length one GEMM instruction streams (a multiple of tile_k;
    default tile_k): the engine consumes a ``tile_m x depth`` strip of A and a
    ``depth x tile_n`` strip of B, one ``tile_m x tile_n x 1`` slice per cycle.
    """
    m = spec.matrix
    k = depth or m.tile_k
    if k % m.tile_k:
        raise ValueError(f"GEMM depth {k} is not a multiple of tile_k={m.tile_k}")
    return IntrinsicNames(
        gemm=f"lepton_{spec.fingerprint()}_gemm_{m.tile_m}x{m.tile_n}x{k}",
        requant=f"lepton_{spec.fingerprint()}_requant_{m.tile_m}x{m.tile_n}",
    )


def _gemm(spec: LeptonSpec, depth: int):
    from tvm.script import tirx as T

    m, n, k = spec.matrix.tile_m, spec.matrix.tile_n, depth
    a_dt, b_dt, c_dt = spec.matrix.input_dtype, spec.matrix.weight_dtype, \
        spec.matrix.accumulator_dtype

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (m, k), a_dt, offset_factor=1)
        B = T.match_buffer(b, (k, n), b_dt, offset_factor=1)
        C = T.match_buffer(c, (m, n), c_dt, offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:m, 0:n], A[0:m, 0:k], B[0:k, 0:n])
            T.writes(C[0:m, 0:n])
            for i, j, kk in T.grid(m, n, k):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, kk])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], c_dt) * T.cast(B[vk, vj], c_dt)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int32()
        sb = T.int32()
        sc = T.int32()
        A = T.match_buffer(a, (m, k), a_dt, offset_factor=1, strides=[sa, 1])
        B = T.match_buffer(b, (k, n), b_dt, offset_factor=1, strides=[sb, 1])
        C = T.match_buffer(c, (m, n), c_dt, offset_factor=1, strides=[sc, 1])
        with T.sblock("root"):
            T.reads(C[0:m, 0:n], A[0:m, 0:k], B[0:k, 0:n])
            T.writes(C[0:m, 0:n])
            T.evaluate(T.call_extern("int32", GEMM_EXTERN, A.access_ptr("r"), B.access_ptr("r"),
                                     C.access_ptr("rw"), sa, sb, sc, m, n, k))

    return desc, impl


def requant_macro():
    """The requantize arithmetic as a TVMScript macro, shared by the intrinsic's ``desc`` and
    the stand-alone requantize kernel (see ``reference.requantize`` for the semantics)."""
    from tvm.script import tirx as T

    @T.macro(hygienic=False)
    def requant_store(OUT, ACC, BIAS, MUL, SH, QP, vi, vj):
        OUT[vi, vj] = T.Cast("int8", T.max(T.min(
            T.shift_right(
                (T.Cast("int64", ACC[vi, vj]) + T.Cast("int64", BIAS[vj]))
                * T.Cast("int64", MUL[vj])
                + T.shift_left(T.int64(1), T.Cast("int64", SH[vj] - 1)),
                T.Cast("int64", SH[vj]))
            + T.Cast("int64", QP[0]),
            T.Cast("int64", QP[2])), T.Cast("int64", QP[1])))

    return requant_store


def _requant(spec: LeptonSpec, depth: int):  # depth: uniform signature with _gemm
    """int32 accumulator tile -> int8 (see ``reference.requantize`` for the semantics).

    Operands: the accumulator tile, per-channel ``bias``, ``multiplier`` and ``shift``
    (tile_n each),
    ``qparams = [zero_point, lo, hi]`` and the int8 output tile.
    """
    from tvm.script import tirx as T

    m, n = spec.matrix.tile_m, spec.matrix.tile_n
    acc_dt = spec.matrix.accumulator_dtype
    requant_store = requant_macro()

    @T.prim_func(s_tir=True)
    def desc(acc: T.handle, bias: T.handle, mul: T.handle, sh: T.handle, qp: T.handle,
             out: T.handle) -> None:
        ACC = T.match_buffer(acc, (m, n), acc_dt, offset_factor=1)
        BIAS = T.match_buffer(bias, (n,), "int32", offset_factor=1)
        MUL = T.match_buffer(mul, (n,), "int32", offset_factor=1)
        SH = T.match_buffer(sh, (n,), "int32", offset_factor=1)
        QP = T.match_buffer(qp, (3,), "int32", offset_factor=1)
        OUT = T.match_buffer(out, (m, n), "int8", offset_factor=1)
        with T.sblock("root"):
            T.reads(ACC[0:m, 0:n], BIAS[0:n], MUL[0:n], SH[0:n], QP[0:3])
            T.writes(OUT[0:m, 0:n])
            for i, j in T.grid(m, n):
                with T.sblock("requant"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    requant_store(OUT, ACC, BIAS, MUL, SH, QP, vi, vj)

    @T.prim_func(s_tir=True)
    def impl(acc: T.handle, bias: T.handle, mul: T.handle, sh: T.handle, qp: T.handle,
             out: T.handle) -> None:
        s_acc = T.int32()
        s_out = T.int32()
        ACC = T.match_buffer(acc, (m, n), acc_dt, offset_factor=1, strides=[s_acc, 1])
        BIAS = T.match_buffer(bias, (n,), "int32", offset_factor=1)
        MUL = T.match_buffer(mul, (n,), "int32", offset_factor=1)
        SH = T.match_buffer(sh, (n,), "int32", offset_factor=1)
        QP = T.match_buffer(qp, (3,), "int32", offset_factor=1)
        OUT = T.match_buffer(out, (m, n), "int8", offset_factor=1, strides=[s_out, 1])
        with T.sblock("root"):
            T.reads(ACC[0:m, 0:n], BIAS[0:n], MUL[0:n], SH[0:n], QP[0:3])
            T.writes(OUT[0:m, 0:n])
            T.evaluate(T.call_extern(
                "int32", REQUANT_EXTERN, ACC.access_ptr("r"), BIAS.access_ptr("r"),
                MUL.access_ptr("r"), SH.access_ptr("r"), QP.access_ptr("r"), OUT.access_ptr("w"),
                s_acc, s_out, m, n))

    return desc, impl


def register_intrinsics(spec: LeptonSpec, depth: int | None = None) -> IntrinsicNames:
    """Register the spec's intrinsics with TVM (a no-op for names already registered)."""
    from tvm.s_tir import TensorIntrin

    names = intrinsic_names(spec, depth)
    depth = depth or spec.matrix.tile_k
    for name, make in ((names.gemm, _gemm), (names.requant, _requant)):
        if TensorIntrin.get(name, allow_missing=True) is not None:
            continue
        desc, impl = make(spec, depth)
        TensorIntrin.register(name, desc, impl)
    return names


def dma_name(spec: LeptonSpec, direction: str, scope: str, rows: int, cols: int,
             dtype: str) -> str:
    """Name of the DMA instruction moving a ``rows x cols`` block to/from an SRAM scope."""
    return f"lepton_{spec.fingerprint()}_dma_{direction}_{scope}_{rows}x{cols}_{dtype}"


def register_dma(spec: LeptonSpec, direction: str, scope: str, rows: int, cols: int,
                 dtype: str) -> str:
    """Register (idempotently) a 2-D DMA transfer; returns its name.

    ``direction="load"``: DRAM -> ``scope``; ``"store"``: ``scope`` -> DRAM. Semantics:
    ``dst[r, c] = src[r, c]`` for a ``rows x cols`` block, one descriptor (one fixed cost)
    per block, strided on both sides.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    if scope not in SRAM_SCOPES:
        raise ValueError(f"unknown SRAM scope {scope!r}; known: {', '.join(SRAM_SCOPES)}")
    if direction not in DMA_EXTERNS:
        raise ValueError(f"unknown DMA direction {direction!r}; use 'load' or 'store'")
    name = dma_name(spec, direction, scope, rows, cols, dtype)
    if TensorIntrin.get(name, allow_missing=True) is not None:
        return name
    scope_id = SRAM_SCOPES[scope]
    elem_bytes = {"int8": 1, "int16": 2, "int32": 4}[dtype]
    extern = DMA_EXTERNS[direction]

    @T.prim_func(s_tir=True)
    def desc(src: T.handle, dst: T.handle) -> None:
        S = T.match_buffer(src, (rows, cols), dtype, offset_factor=1)
        D = T.match_buffer(dst, (rows, cols), dtype, offset_factor=1)
        with T.sblock("root"):
            T.reads(S[0:rows, 0:cols])
            T.writes(D[0:rows, 0:cols])
            for r, c in T.grid(rows, cols):
                with T.sblock("copy"):
                    vr, vc = T.axis.remap("SS", [r, c])
                    D[vr, vc] = S[vr, vc]

    @T.prim_func(s_tir=True)
    def impl(src: T.handle, dst: T.handle) -> None:
        ss = T.int32()
        sd = T.int32()
        S = T.match_buffer(src, (rows, cols), dtype, offset_factor=1, strides=[ss, 1])
        D = T.match_buffer(dst, (rows, cols), dtype, offset_factor=1, strides=[sd, 1])
        with T.sblock("root"):
            T.reads(S[0:rows, 0:cols])
            T.writes(D[0:rows, 0:cols])
            T.evaluate(T.call_extern("int32", extern, S.access_ptr("r"), D.access_ptr("w"),
                                     ss * elem_bytes, sd * elem_bytes, rows, cols * elem_bytes,
                                     scope_id))

    TensorIntrin.register(name, desc, impl)
    return name


def vector_name(spec: LeptonSpec, op: str) -> str:
    """Name of a vector-unit instruction over one ``lanes``-wide vector."""
    return f"lepton_{spec.fingerprint()}_v{op}_{spec.vector.lanes}"


def register_vector_op(spec: LeptonSpec, op: str) -> str:
    """Register (idempotently) an elementwise vector instruction; returns its name.

    Accumulating form, ``out`` read and written: ``max_i8``: ``out = max(out, a)`` on int8
    lanes (max pooling); ``add_i32``: ``out = out + a`` on int32 lanes (residual add and
    average-pool sums in the accumulator domain).
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    if op not in VECTOR_EXTERNS:
        raise ValueError(f"unknown vector op {op!r}; known: {', '.join(VECTOR_EXTERNS)}")
    name = vector_name(spec, op)
    if TensorIntrin.get(name, allow_missing=True) is not None:
        return name
    lanes = spec.vector.lanes
    dtype = "int8" if op == "max_i8" else "int32"
    extern = VECTOR_EXTERNS[op]

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, out: T.handle) -> None:
        A = T.match_buffer(a, (lanes,), dtype, offset_factor=1)
        OUT = T.match_buffer(out, (lanes,), dtype, offset_factor=1)
        with T.sblock("root"):
            T.reads(OUT[0:lanes], A[0:lanes])
            T.writes(OUT[0:lanes])
            for i in T.serial(lanes):
                with T.sblock("v"):
                    vi = T.axis.remap("S", [i])
                    if op == "max_i8":
                        OUT[vi] = T.max(OUT[vi], A[vi])
                    else:
                        OUT[vi] = OUT[vi] + A[vi]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, out: T.handle) -> None:
        A = T.match_buffer(a, (lanes,), dtype, offset_factor=1)
        OUT = T.match_buffer(out, (lanes,), dtype, offset_factor=1)
        with T.sblock("root"):
            T.reads(OUT[0:lanes], A[0:lanes])
            T.writes(OUT[0:lanes])
            T.evaluate(T.call_extern("int32", extern, OUT.access_ptr("r"), A.access_ptr("r"),
                                     OUT.access_ptr("w"), lanes))

    TensorIntrin.register(name, desc, impl)
    return name
