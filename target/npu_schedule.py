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
from lepton_compiler.target.intrinsics import register_intrinsics
from lepton_compiler.target.spec import LeptonSpec


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
    # The whole (padded) weight matrix is staged in weight SRAM once and reused by every
    # row strip, instead of one column strip per output tile.
    weights_stationary: bool = False
    # Row strips (tile_m rows each) staged and computed per weight strip: each staged B strip
    # is reused m_block times (less weight traffic, more input SRAM, M padded further).
    m_block: int = 1
    # With stationary weights too large for the weight SRAM: the columns are taken in blocks
    # of n_block (a multiple of tile_n dividing the padded N) outermost, each block's weights
    # (pk x n_block) staged once and every row strip computed against them (the input is
    # read once per column block instead of the weights once per row strip). 0: all of N.
    n_block: int = 0

    @property
    def useful_macs(self) -> int:
        return self.m * self.n * self.k

    @property
    def columns(self) -> int:
        """Columns whose weights are staged at once (stationary) and whose partial sums a row
        strip keeps: ``n_block`` or all of N."""
        return self.n_block or self.padded[1]

    @property
    def knobs(self) -> dict[str, int | bool]:
        """The tunable choices of this plan (what a tuning record stores)."""
        knobs: dict[str, int | bool] = {"k_block": self.k_block, "m_block": self.m_block,
                                        "weights_stationary": self.weights_stationary}
        if self.n_block:
            knobs["n_block"] = self.n_block
        return knobs


def _round_up(x: int, to: int) -> int:
    return -(-x // to) * to


def _needs(mat, pn: int, pk: int, k_block: int, stationary: bool = False,
           m_block: int = 1, n_block: int = 0) -> dict[str, int]:
    """SRAM bytes per scope for a K block: staged strips are double-buffered; partial sums of
    a whole row strip (of a column block) stay in the accumulator SRAM when K spans several
    blocks; stationary weights occupy ``pk x pn`` bytes (``pk x n_block`` per column block)."""
    columns = n_block or pn
    acc_tiles = 2 * mat.tile_n if k_block == pk else columns
    return {
        "input": 2 * m_block * mat.tile_m * k_block,
        "weight": pk * columns if stationary else 2 * k_block * mat.tile_n,
        "accumulator": m_block * mat.tile_m * acc_tiles * 4,
    }


def _room(spec: LeptonSpec, input_reserved: int = 0) -> dict[str, int]:
    """Bytes per SRAM scope a kernel's own working set may use: the spec's sizes, less
    ``input_reserved`` bytes of input SRAM held by cascaded activations."""
    return {scope: getattr(spec.sram, f"{scope}_bytes") - (input_reserved if scope == "input"
                                                           else 0)
            for scope in ("input", "weight", "accumulator")}


def candidate_plans(m: int, n: int, k: int, spec: LeptonSpec,
                    m_blocks: tuple[int, ...] = (1, 2, 4),
                    input_reserved: int = 0) -> list[GemmPlan]:
    """Every plan of an ``m x n x k`` product that fits the spec's SRAM: the tuning space
    (K block depth, stationary weights, row strips per weight strip). Candidates that would
    overflow an SRAM scope are left out before anything is measured; ``input_reserved``
    bytes of input SRAM are held by cascaded activations (``lower/cascade.py``)."""
    mat = spec.matrix
    room = _room(spec, input_reserved)
    pn, pk = _round_up(n, mat.tile_n), _round_up(k, mat.tile_k)
    plans = []
    for m_block in m_blocks:
        pm = _round_up(m, mat.tile_m * m_block)
        if m_block > 1 and pm // mat.tile_m < m_block:
            continue  # fewer row strips than the block: same as a smaller block
        # stationary weights: all of N, or column blocks when all of N does not fit
        layouts = [(False, 0)]
        if pm > mat.tile_m * m_block:
            layouts.append((True, 0))
            if pk * pn > room["weight"]:
                layouts += [(True, nb) for nb in range(pn - mat.tile_n, 0, -mat.tile_n)
                            if pn % nb == 0 and pk * nb <= room["weight"]]
        for stationary, n_block in layouts:
            for k_block in range(pk, 0, -mat.tile_k):
                if pk % k_block == 0 and all(
                    need <= room[scope] for scope, need in _needs(
                        mat, pn, pk, k_block, stationary, m_block, n_block).items()):
                    plans.append(GemmPlan(m, n, k, (pm, pn, pk), k_block, stationary,
                                          m_block, n_block))
    return plans


def plan_from_knobs(m: int, n: int, k: int, spec: LeptonSpec,
                    knobs: dict[str, int | bool], input_reserved: int = 0) -> GemmPlan:
    """The plan with the given tuning choices (``GemmPlan.knobs``; a tuning record's other
    keys, such as ``resident``, are not the plan's); SramOverflowError if it does not fit
    this spec beside ``input_reserved`` bytes of cascaded activations."""
    mat = spec.matrix
    m_block = int(knobs.get("m_block", 1))
    plan = GemmPlan(m, n, k, (_round_up(m, mat.tile_m * m_block), _round_up(n, mat.tile_n),
                              _round_up(k, mat.tile_k)),
                    int(knobs["k_block"]), bool(knobs["weights_stationary"]), m_block,
                    int(knobs.get("n_block", 0)))
    if plan.padded[2] % plan.k_block or plan.k_block % mat.tile_k or plan.k_block <= 0:
        raise SramOverflowError(f"K block {plan.k_block} does not divide the padded K "
                                f"{plan.padded[2]} in whole tiles")
    if plan.n_block and (plan.padded[1] % plan.n_block or plan.n_block % mat.tile_n
                         or plan.n_block < 0 or not plan.weights_stationary):
        raise SramOverflowError(f"N block {plan.n_block} does not divide the padded N "
                                f"{plan.padded[1]} in whole tiles of stationary weights")
    check_working_set(plan, spec, input_reserved)
    return plan


def estimated_cycles(plan: GemmPlan, spec: LeptonSpec) -> int:
    """The sim's cycles for ``plan`` estimated from its loop structure (the sim's formula:
    ``lepton_runtime.profile.sim_cycles``): one tile_m x tile_n slice per cycle, the 7-op
    requantize per output vector (overlapping the products: ``sim_cycles``), and
    per DMA descriptor its fixed cost plus bytes at the DMA rate — the A strips once per
    row-strip group and K block, the B strips once (stationary) or once per row-strip group,
    K block and output tile, the int8 output tiles once."""
    mat, dma = spec.matrix, spec.dma
    pm, pn, pk = plan.padded
    groups, kblocks = pm // (mat.tile_m * plan.m_block), pk // plan.k_block
    tiles = (pm // mat.tile_m) * (pn // mat.tile_n)
    from lepton_runtime.profile import busy_cycles

    vector = tiles * mat.tile_m * mat.tile_n // spec.vector.lanes * REQUANT_OPS
    busy = busy_cycles(tiles * pk, vector, sim_static(plan, spec))
    nblocks = pn // plan.columns  # the A strips are loaded once per column block
    a = nblocks * groups * kblocks * dma.cycles(plan.m_block * mat.tile_m * plan.k_block)
    b = nblocks * dma.cycles(pk * plan.columns) if plan.weights_stationary else \
        groups * kblocks * (pn // mat.tile_n) * dma.cycles(plan.k_block * mat.tile_n)
    out = tiles * dma.cycles(mat.tile_m * mat.tile_n)
    return max(busy, a + b + out)


#: Vector ops of the requantize instruction per lane group (lepton_requant_i32_i8's
#: REQUANT_OPS: a fixed sequence, so a GEMM's cycles do not depend on its constants).
REQUANT_OPS = 7


def estimated_dram_bytes(plan: GemmPlan, spec: LeptonSpec) -> int:
    """The DRAM bytes of ``plan``'s loop structure (see :func:`estimated_cycles`)."""
    mat = spec.matrix
    pm, pn, pk = plan.padded
    groups = pm // (mat.tile_m * plan.m_block)
    weights = pk * pn if plan.weights_stationary else groups * pk * pn
    return pm * pk * (pn // plan.columns) + weights + pm * pn


#: How much slower than the fastest estimate a default plan may be to move fewer DRAM bytes.
CYCLE_SLACK = 0.01


def plan_gemm(m: int, n: int, k: int, spec: LeptonSpec, input_reserved: int = 0) -> GemmPlan:
    """The default tiling of an ``m x n x k`` product: of the plans that fit the SRAM (any
    K block; stationary weights; row-strip groups of 1, 2, 4, ... up to every row strip, so
    that weights too large to stay resident are still loaded once per group), the one with
    the fewest :func:`estimated_dram_bytes` among those within :data:`CYCLE_SLACK` of the
    fewest :func:`estimated_cycles` (then the fewest cycles, the deepest K block). DRAM
    traffic costs energy and bandwidth the rest of the chip shares, so a plan that is as fast
    to within a fraction of a percent and moves half the bytes is the better default.

    Raises
    ------
    SramOverflowError
        When no K block fits (the spec's SRAM is too small for this operator).
    """
    mat = spec.matrix
    strips = -(-m // mat.tile_m)
    blocks = sorted({1, 2, 4, *(b for b in (8, 16, 32, 64) if b < strips), strips})
    plans = candidate_plans(m, n, k, spec, m_blocks=tuple(blocks),
                            input_reserved=input_reserved)
    if plans:
        cycles = {p: estimated_cycles(p, spec) for p in plans}
        fast = min(cycles.values()) * (1 + CYCLE_SLACK)
        return min((p for p in plans if cycles[p] <= fast),
                   key=lambda p: (estimated_dram_bytes(p, spec), cycles[p], -p.k_block,
                                  not p.weights_stationary, p.m_block))
    raise SramOverflowError(
        f"matmul {m}x{n}x{k} does not fit the SRAM of {spec.name} (input "
        f"{spec.sram.input_bytes - input_reserved} B free, weight {spec.sram.weight_bytes} B, "
        f"accumulator {spec.sram.accumulator_bytes} B) with any K block"
    )


def sram_needs(plan: GemmPlan, spec: LeptonSpec) -> dict[str, int]:
    """Peak SRAM bytes per scope of ``plan``'s schedule."""
    return _needs(spec.matrix, plan.padded[1], plan.padded[2], plan.k_block,
                  plan.weights_stationary, plan.m_block, plan.n_block)


def check_working_set(plan: GemmPlan, spec: LeptonSpec, input_reserved: int = 0) -> None:
    """Raise SramOverflowError if ``plan`` stages more than the SRAM scopes hold (beside
    ``input_reserved`` bytes of cascaded activations in the input SRAM)."""
    room = _room(spec, input_reserved)
    for scope, need in sram_needs(plan, spec).items():
        if need > room[scope]:
            held = f" beside {input_reserved} B of cascaded activations" \
                if input_reserved and scope == "input" else ""
            raise SramOverflowError(
                f"matmul {plan.m}x{plan.n}x{plan.k}: the {scope} SRAM working set is {need} "
                f"bytes but the spec's {scope} SRAM holds {room[scope]}{held}; reduce k_block"
            )


def sim_static(plan: GemmPlan, spec: LeptonSpec) -> dict[str, int]:
    """The compiler's static sim figures of a GEMM kernel (recorded in the artifact's plan):
    the prologue double-buffering cannot hide (the first A and B strips), the output blocks
    the vector unit requantizes beside the products (see ``lepton_runtime.profile``), the
    useful MACs and the SRAM working set.
    """
    mat, dma = spec.matrix, spec.dma
    pm, pn, pk = plan.padded
    weights = pk * plan.columns if plan.weights_stationary else plan.k_block * mat.tile_n
    return {
        "prologue_cycles": dma.cycles(plan.m_block * mat.tile_m * plan.k_block)
        + dma.cycles(weights),
        # the vector unit requantizes each output block (m_block row strips x one tile of
        # columns) during the next block's last K block (see lepton_runtime.profile)
        "output_blocks": pm // (mat.tile_m * plan.m_block) * (pn // mat.tile_n),
        "requant_block_cycles": plan.m_block * mat.tile_m * mat.tile_n // spec.vector.lanes
        * REQUANT_OPS,
        "overlap_window": plan.m_block * plan.k_block,
        "useful_macs": plan.useful_macs,
        **{f"sram_{scope}_bytes": need for scope, need in sram_needs(plan, spec).items()},
    }


def sim_report(plan: GemmPlan, spec: LeptonSpec, counters: dict[str, int]) -> dict[str, float]:
    """Cycles, utilisation and traffic of one run from the sim counters and the plan.

    Uses the runtime's cycle model (``lepton_runtime.profile.sim_cycles``) so the compiler,
    the benchmarks and ``Session.profile()`` agree.
    """
    from lepton_runtime.profile import sim_cycles

    mat, dma = spec.matrix, spec.dma
    static = sim_static(plan, spec)
    cycles = sim_cycles(counters, static)
    dram = counters["dram_bytes"]
    return {
        "cycles": cycles,
        "compute_cycles": counters["compute_cycles"] + counters["vector_cycles"],
        "dma_cycles": counters["dma_cycles"],
        "macs_useful": plan.useful_macs,
        "macs_issued": counters["macs_issued"],
        "utilisation": plan.useful_macs / (cycles * mat.macs_per_cycle),
        "dram_bytes": dram,
        "roofline_cycles": max(plan.useful_macs / mat.macs_per_cycle,
                               dram / dma.bytes_per_cycle),
        **{f"sram_{scope}_bytes": need for scope, need in sram_needs(plan, spec).items()},
    }


def schedule_matmul(sch, block, spec: LeptonSpec, plan: GemmPlan,
                    epilogue: str | None = None) -> None:
    """Tensorize an int8 matmul block in ``sch`` onto the spec's GEMM instruction.

    ``epilogue``: the name of a requantize block that consumes the product; it then reads
    the accumulators in place (no int32 store to DRAM) and, on whole tiles, runs as the
    requantize instruction right after each output tile (or row strip) completes.
    """
    check_working_set(plan, spec)
    names = register_intrinsics(spec, plan.k_block)
    mat = spec.matrix
    main_name = sch.get(block).name_hint
    iters = sch.get(block).iter_vars
    batch = [int(iv.dom.extent) for iv in iters[:-3]]  # a leading batch axis, if any
    if (plan.m, plan.n, plan.k) != plan.padded:
        sch.pad_einsum(block, [*batch, *plan.padded])
    padding = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))
               if sch.get(b).name_hint != main_name]
    loops = sch.get_loops(block)
    i, j, k = loops[-3:]
    io, ii = sch.split(i, [None, mat.tile_m * plan.m_block])
    jb = None
    if plan.n_block:  # column blocks outermost, each block's weights staged once
        jb, j = sch.split(j, [None, plan.n_block])
    jo, ji = sch.split(j, [None, mat.tile_n])
    kb, kr = sch.split(k, [None, plan.k_block])
    # io: row strips (m_block of them) in parallel; kb: K blocks; jo: output tiles reusing
    # the staged A strips; im: the row strips reusing one staged B strip.
    outer = [*(() if jb is None else (jb,)), *loops[-3 - len(batch):-3]]
    if plan.m_block > 1:
        im, ii = sch.split(ii, [plan.m_block, mat.tile_m])
        sch.reorder(*outer, io, kb, jo, im, ii, ji, kr)
    else:
        sch.reorder(*outer, io, kb, jo, ii, ji, kr)
    if jb is not None:
        outer = outer[1:]
    io = sch.fuse(*outer, io) if outer else io
    sch.parallel(io)
    _stage_operands(sch, block, spec, plan, kb, jo, store=epilogue is None, jb=jb)
    if epilogue is not None:
        padding = _fuse_epilogue(sch, spec, plan, names, epilogue, padding, io)
    sch.decompose_reduction(block, kb)
    sch.tensorize(ii, names.gemm)
    for name in padding:  # the pad/unpad copies run on the host, in parallel
        _parallel_outer(sch, sch.get_sblock(name))


def _fuse_epilogue(sch, spec: LeptonSpec, plan: GemmPlan, names, epilogue: str,
                   padding: list[str], at) -> list[str]:
    """Requantize straight from the accumulators (see :func:`schedule_matmul`)."""
    mat = spec.matrix
    requant = sch.get_sblock(epilogue)
    if _ragged_output(plan, spec):
        return padding  # a ragged edge: a host loop over the accumulators (see _count_ragged)
    sch.reverse_compute_at(requant, at, preserve_unit_loops=True)
    i, j = sch.get_loops(requant)[-2:]
    jo, ji = sch.split(j, [None, mat.tile_n])
    if plan.m_block > 1:
        im, i = sch.split(i, [plan.m_block, mat.tile_m])
        sch.reorder(jo, im, i, ji)
    else:
        sch.reorder(jo, i, ji)
    sch.tensorize(i, names.requant)
    return [n for n in padding if n != epilogue]


def _stage_operands(sch, block, spec: LeptonSpec, plan: GemmPlan, kb, jo,
                    store: bool = True, jb=None) -> None:
    """DMA the A strip (tile_m x k_block) into input SRAM once per K block, the B strip
    (k_block x tile_n) into weight SRAM per output tile — or, with stationary weights, the
    whole B once before the loops (one column block's at each ``jb``) — and store each int32
    output tile from the accumulator SRAM; the GEMM works on the staged copies."""
    from lepton_compiler.target.intrinsics import register_dma

    mat = spec.matrix
    pk = plan.padded[2]
    # Only the product reads the staged copies (a kernel may read A or B elsewhere too).
    a_copy = sch.cache_read(block, 0, "global", consumer_blocks=[block])
    b_copy = sch.cache_read(block, 1, "global", consumer_blocks=[block])
    sch.compute_at(a_copy, kb, preserve_unit_loops=True)
    b_rows, b_cols = (pk, plan.columns) if plan.weights_stationary else \
        (plan.k_block, mat.tile_n)
    if not plan.weights_stationary:
        sch.compute_at(b_copy, jo, preserve_unit_loops=True)
    elif jb is not None:  # one column block's weights per block
        sch.compute_at(b_copy, jb, preserve_unit_loops=True)
    copies = [(a_copy, "load", "input", mat.tile_m * plan.m_block, plan.k_block,
               mat.input_dtype),
              (b_copy, "load", "weight", b_rows, b_cols, mat.weight_dtype)]
    if store:
        c_store = sch.cache_write(block, 0, "global")
        sch.reverse_compute_at(c_store, jo, preserve_unit_loops=True)
        copies.append((c_store, "store", "accumulator", mat.tile_m * plan.m_block,
                       mat.tile_n, mat.accumulator_dtype))
    for copy, direction, scope, rows, cols, dtype in copies:
        loops = sch.get_loops(copy)
        sch.tensorize(loops[-2], register_dma(spec, direction, scope, rows, cols, dtype))


def buffer_bytes(buffer) -> int:
    """Bytes of a TIR buffer (or buffer-typed parameter) of static shape."""
    import numpy as np

    return int(np.prod([int(d) for d in buffer.shape], dtype=np.int64)) \
        * np.dtype(str(buffer.dtype)).itemsize


def _ragged_output(plan: GemmPlan, spec: LeptonSpec) -> bool:
    """Whether the output is not a whole number of row-strip groups x 16-column tiles (the
    requantize epilogue then runs as a host loop, charged by :func:`_count_ragged`)."""
    return bool(plan.m % (spec.matrix.tile_m * plan.m_block) or plan.n % spec.matrix.tile_n)


def _wrap_root(func, first=None, last=None):
    """``func`` with statements before and after its root block's body."""
    from tvm import s_tir, tirx

    root = func.body.block  # the root block holds the whole kernel
    body = tirx.SeqStmt([s for s in (first, root.body, last) if s is not None])
    block = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body,
                         root.init, root.alloc_buffers, root.match_buffers, root.annotations)
    return func.with_body(s_tir.SBlockRealize(func.body.iter_values, func.body.predicate,
                                              block))


def _alias_padded_input(func):
    """A dense GEMM whose input the emulation pads (``X_pad``) marks the copy resident while
    the input is (``lepton_pad_alias``), so a cascade into it counts as on chip."""
    from tvm import tirx

    source = func.params[0]
    pad = next((b for b in func.body.block.alloc_buffers
                if b.name == f"{source.name}_pad"), None)
    if pad is None:
        return func
    nbytes = buffer_bytes(pad)
    begin = tirx.Evaluate(tirx.call_extern("int32", "lepton_pad_alias", source.data, pad.data,
                                           tirx.IntImm("int64", nbytes)))
    end = tirx.Evaluate(tirx.call_extern("int32", "lepton_pad_alias_end", pad.data))
    return _wrap_root(func, begin, end)


def _count_ragged(func, spec: LeptonSpec, plan: GemmPlan, batch: int):
    """A kernel whose requantize epilogue runs as a host loop (a ragged output edge) still
    charges the NPU's work in sim mode: the vector unit requantizes every padded row-strip
    group x 16-column block and stores its valid int8 part (``lepton_requant_count``)."""
    from tvm import tirx

    mat = spec.matrix
    pm, pn, _ = plan.padded
    rows = mat.tile_m * plan.m_block
    count = tirx.Evaluate(tirx.call_extern(
        "int32", "lepton_requant_count", func.params[-1].data,
        tirx.IntImm("int32", batch * (pm // rows) * (pn // mat.tile_n)),
        tirx.IntImm("int32", rows * mat.tile_n),
        tirx.IntImm("int64", batch * plan.m * plan.n)))
    return _wrap_root(func, last=count)


def _parallel_outer(sch, block) -> None:
    loops = sch.get_loops(block)
    if loops:
        try:
            sch.parallel(loops[0])
        except Exception:  # a loop that cannot run in parallel stays serial
            pass


EXTENTS_ATTR = "lepton.gemm_extents"
BATCH_ATTR = "lepton.gemm_batch"
FORM_ATTR = "lepton.gemm_form"


def gemm_extents(func) -> tuple[int, int, int]:
    """(M, N, K) of the ``matmul`` block of a quantized GEMM kernel (``qkernels``)."""
    from tvm import s_tir

    if func.attrs is not None and EXTENTS_ATTR in func.attrs:
        m, n, k = (int(v) for v in func.attrs[EXTENTS_ATTR])
        return m, n, k
    sch = s_tir.Schedule(func)
    block = sch.get(sch.get_sblock("matmul"))
    m, n, k = (int(iv.dom.extent) for iv in block.iter_vars[-3:])  # after a batch axis
    return m, n, k


def gemm_form(func) -> str:
    """How a quantized GEMM kernel reads and writes: ``im2col`` or ``dense`` input,
    ``requant`` (int8) or ``int32`` output (recorded on the kernel once scheduled)."""
    from tvm import s_tir

    if func.attrs is not None and FORM_ATTR in func.attrs:
        return str(func.attrs[FORM_ATTR])
    sch = s_tir.Schedule(func)
    blocks = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    return f"{'im2col' if 'im2col' in blocks else 'dense'}-" \
           f"{'requant' if 'requant' in blocks else 'int32'}"


def gemm_batch(func) -> int:
    """The batch extent of a quantized GEMM kernel (1 without a batch axis)."""
    from tvm import s_tir

    if func.attrs is not None and BATCH_ATTR in func.attrs:
        return int(func.attrs[BATCH_ATTR])
    sch = s_tir.Schedule(func)
    batch = 1
    for iv in sch.get(sch.get_sblock("matmul")).iter_vars[:-3]:
        batch *= int(iv.dom.extent)
    return batch


PLAN_ATTR = "lepton.gemm_plan"


def kernel_plan(func, spec: LeptonSpec) -> GemmPlan:
    """The plan a scheduled GEMM kernel was built with (the default plan if unrecorded)."""
    extents = gemm_extents(func)
    if func.attrs is not None and PLAN_ATTR in func.attrs:
        k_block, stationary, m_block, n_block = (int(v) for v in func.attrs[PLAN_ATTR])
        return plan_from_knobs(*extents, spec, {"k_block": k_block,
                                                "weights_stationary": bool(stationary),
                                                "m_block": m_block, "n_block": n_block})
    return plan_gemm(*extents, spec)


def gemm_sim_static(func, spec: LeptonSpec) -> dict[str, int]:
    """The static sim figures (see :func:`sim_static`) of a quantized GEMM kernel."""
    figures = sim_static(kernel_plan(func, spec), spec)
    batch = gemm_batch(func)
    figures["useful_macs"] *= batch
    figures["output_blocks"] *= batch
    return figures


def schedule_gemm_kernel(func, spec: LeptonSpec, plan: GemmPlan | None = None):
    """Schedule a quantized conv2d/dense/matmul kernel (``qkernels``) for the NPU.

    The product is tensorized onto the GEMM instruction (:func:`schedule_matmul`); the
    requantization reads the accumulators in place and runs as the requantize instruction
    when the output is a whole number of tiles (otherwise as a host loop, same arithmetic);
    the ``im2col`` window gather, which the DMA engine's address generation performs, runs
    in parallel on the host in the emulation.
    """
    from tvm import s_tir

    m, n, k = gemm_extents(func)
    plan = plan or plan_gemm(m, n, k, spec)
    sch = s_tir.Schedule(func)
    names_in = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    batch, form = gemm_batch(func), gemm_form(func)
    if "im2col" in names_in:
        gather = sch.get_sblock("im2col")
        loops = sch.get_loops(gather)
        sch.parallel(sch.fuse(loops[0], loops[1]))  # images x output rows
    schedule_matmul(sch, sch.get_sblock("matmul"), spec, plan,
                    epilogue="requant" if "requant" in names_in else None)
    func = sch.mod["main"]
    if "requant" in names_in and _ragged_output(plan, spec):
        func = _count_ragged(func, spec, plan, batch)
    func = _alias_padded_input(func)
    return (func.with_attr(EXTENTS_ATTR, [m, n, k])
            .with_attr(BATCH_ATTR, batch).with_attr(FORM_ATTR, form)
            .with_attr(PLAN_ATTR, [plan.k_block, int(plan.weights_stationary), plan.m_block,
                                   plan.n_block]))
