"""Lepton NPU instructions as TVM tensor intrinsics, derived from the spec.

Each instruction is a ``TensorIntrin``: ``desc`` (its semantics as a TIR loop nest) and
``impl`` (a ``T.call_extern`` of the ``lepton_*`` C function in ``csrc/lepton_npu.c``).
Names come from :func:`intrinsic_names` only; registration is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import LeptonSpec

GEMM_EXTERN = "lepton_gemm_i8"


@dataclass(frozen=True)
class IntrinsicNames:
    """The registered names of a spec's intrinsics."""

    gemm: str


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


def register_intrinsics(spec: LeptonSpec, depth: int | None = None) -> IntrinsicNames:
    """Register the spec's intrinsics with TVM (a no-op for names already registered)."""
    from tvm.s_tir import TensorIntrin

    names = intrinsic_names(spec, depth)
    depth = depth or spec.matrix.tile_k
    for name, make in ((names.gemm, _gemm),):
        if TensorIntrin.get(name, allow_missing=True) is not None:
            continue
        desc, impl = make(spec, depth)
        TensorIntrin.register(name, desc, impl)
    return names
