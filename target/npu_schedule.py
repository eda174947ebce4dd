"""Tensorized schedules that map int8 matrix products onto the Lepton GEMM instruction.

A matmul block ``C[i, j] += A[i, k] * B[k, j]`` (int8 operands, int32 accumulator) is padded
to multiples of the spec's tile (``pad_einsum``: odd sizes are padded, not refused), tiled to
``tile_m x tile_n x tile_k`` and its inner tile tensorized onto the GEMM intrinsic. The
working set of one output tile — a ``tile_m x K`` strip of A, a ``K x tile_n`` strip of B and
the int32 accumulator tile — is checked against the spec's SRAM sizes: a schedule that would
overflow raises :class:`SramOverflowError` instead of corrupting data.
"""

from __future__ import annotations

from dataclasses import dataclass

from lepton_compiler.errors import CompileError

from .intrinsics import register_intrinsics
from .spec import LeptonSpec


class SramOverflowError(CompileError):
    """A schedule's working set does not fit an SRAM scope of the spec."""


@dataclass(frozen=True)
class GemmPlan:
    """The tiling of one matrix product on the NPU."""

    m: int
    n: int
    k: int
    padded: tuple[int, int, int]
    k_block: int  # reduction depth staged in SRAM at once

    @property
    def useful_macs(self) -> int:
        return self.m * self.n * self.k


def _round_up(x: int, to: int) -> int:
    return -(-x // to) * to


def plan_gemm(m: int, n: int, k: int, spec: LeptonSpec) -> GemmPlan:
    """Tile sizes for an ``m x n x k`` product; the deepest K block that fits SRAM.

    Raises
    ------
    SramOverflowError
        When even one tile_k slice does not fit (the spec's SRAM is too small for this op).
    """
    mat = spec.matrix
    pm, pn, pk = _round_up(m, mat.tile_m), _round_up(n, mat.tile_n), _round_up(k, mat.tile_k)
    # The deepest strip that divides the padded K and fits the input and weight SRAM.
    k_block = pk
    while k_block >= mat.tile_k:
        if pk % k_block:
            k_block -= mat.tile_k
            continue
        if (mat.tile_m * k_block <= spec.sram.input_bytes
                and k_block * mat.tile_n <= spec.sram.weight_bytes
                and mat.accumulator_tile_bytes <= spec.sram.accumulator_bytes):
            return GemmPlan(m, n, k, (pm, pn, pk), k_block)
        k_block -= mat.tile_k
    raise SramOverflowError(
        f"a {mat.tile_m}x{mat.tile_n}x{mat.tile_k} GEMM tile does not fit SRAM "
        f"(input {spec.sram.input_bytes} B, weight {spec.sram.weight_bytes} B, accumulator "
        f"{spec.sram.accumulator_bytes} B) for matmul {m}x{n}x{k}"
    )


def check_working_set(plan: GemmPlan, spec: LeptonSpec) -> None:
    """Raise SramOverflowError if ``plan`` stages more than the SRAM scopes hold."""
    mat = spec.matrix
    needs = {
        "input": mat.tile_m * plan.k_block,
        "weight": plan.k_block * mat.tile_n,
        "accumulator": mat.accumulator_tile_bytes,
    }
    for scope, need in needs.items():
        have = getattr(spec.sram, f"{scope}_bytes")
        if need > have:
            raise SramOverflowError(
                f"matmul {plan.m}x{plan.n}x{plan.k}: the {scope} SRAM working set is {need} "
                f"bytes but the spec's {scope} SRAM holds {have}; reduce k_block"
            )


def schedule_matmul(sch, block, spec: LeptonSpec, plan: GemmPlan) -> None:
    """Tensorize an int8 matmul block in ``sch`` onto the spec's GEMM instruction."""
    check_working_set(plan, spec)
    names = register_intrinsics(spec, plan.k_block)
    mat = spec.matrix
    main_name = sch.get(block).name_hint
    if (plan.m, plan.n, plan.k) != plan.padded:
        sch.pad_einsum(block, list(plan.padded))
    padding = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))
               if sch.get(b).name_hint != main_name]
    i, j, k = sch.get_loops(block)[-3:]
    io, ii = sch.split(i, [None, mat.tile_m])
    jo, ji = sch.split(j, [None, mat.tile_n])
    kb, kr = sch.split(k, [None, plan.k_block])
    sch.reorder(io, jo, kb, ii, ji, kr)
    sch.parallel(sch.fuse(io, jo))
    sch.decompose_reduction(block, kb)
    sch.tensorize(ii, names.gemm)
    for name in padding:  # the pad/unpad copies run on the host, in parallel
        _parallel_outer(sch, sch.get_sblock(name))


def _parallel_outer(sch, block) -> None:
    loops = sch.get_loops(block)
    if loops:
        try:
            sch.parallel(loops[0])
        except Exception:  # a loop that cannot run in parallel stays serial
            pass
