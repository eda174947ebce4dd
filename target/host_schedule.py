"""Host CPU schedules for the fused TIR kernels: parallel over 2+ cores, vectorised.

TVM's CPU dlight rules cover only GEMV and reductions, so the dense kernels that dominate
CNNs and MLPs (NHWC conv2d, matmul) get register-tiled schedules here, and everything else a
generic one: producers inlined, outer loops fused and parallel, the innermost loop vectorised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lepton_compiler import tvm_compat
from lepton_compiler.target.host import HostTarget

logger = logging.getLogger(__name__)


#: The CPU features (LLVM names) that decide the host schedule parameters.
VECTOR_FEATURES = ("avx512f", "avx")


@dataclass(frozen=True)
class HostScheduleConfig:
    """Knobs of the host schedules (vector width in fp32 elements, register tile sizes).

    The defaults describe AVX-512 (16 lanes, 32 vector registers); :meth:`for_host` derives
    them from a resolved host CPU's features.
    """

    vector_lanes: int = 16
    tile_rows: int = 7           # row tile when the columns are narrower than one vector
    max_tile_vectors: int = 4    # widest register tile, in vectors
    accumulator_budget: int = 24  # vector registers held as accumulators (3/4 of the file)
    parallel_min_extent: int = 2

    def __post_init__(self) -> None:
        if self.vector_lanes < 1 or self.accumulator_budget < 1 or self.max_tile_vectors < 1:
            raise ValueError(f"invalid host schedule config {self}")

    @classmethod
    def for_host(cls, host: HostTarget) -> HostScheduleConfig:
        """The config for a resolved host CPU (see :meth:`for_features`)."""
        return cls.for_features(host.features(VECTOR_FEATURES))

    @classmethod
    def for_features(cls, features: set[str]) -> HostScheduleConfig:
        """Lanes and register budget of the widest fp32 vector unit among ``features``:
        AVX-512 (16 lanes, 32 registers), AVX/AVX2 (8 lanes, 16 registers), else 128-bit
        vectors (4 lanes, 16 registers)."""
        lanes, registers = (16, 32) if "avx512f" in features else \
            (8, 16) if "avx" in features else (4, 16)
        return cls(vector_lanes=lanes, accumulator_budget=registers * 3 // 4)


#: Nominal figures behind :class:`HostThroughput` (placement estimates, not measurements):
#: clock, FMA pipes per core, the share of fp32 peak a fallback kernel sustains, and the
#: memory bandwidth one core draws.
NOMINAL_CLOCK_HZ = 2.5e9
FMA_PIPES = 2
SUSTAINED_SHARE = 0.125
BYTES_PER_S_PER_CORE = 5e9


@dataclass(frozen=True)
class HostThroughput:
    """Sustained host throughput used to estimate what a host fallback costs."""

    macs_per_s: float
    bytes_per_s: float

    @classmethod
    def for_host(cls, host: HostTarget) -> HostThroughput:
        """From the resolved CPU: its fp32 vector lanes (:meth:`HostScheduleConfig.for_host`)
        times FMA pipes, cores and the nominal clock, at the sustained share of that peak."""
        lanes = HostScheduleConfig.for_host(host).vector_lanes
        cores = max(1, host.num_cores)
        return cls(lanes * FMA_PIPES * cores * NOMINAL_CLOCK_HZ * SUSTAINED_SHARE,
                   cores * BYTES_PER_S_PER_CORE)


def schedule_prim_func(func, config: HostScheduleConfig):
    """Return ``func`` scheduled for the host; unschedulable blocks are left as they are."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    _inline_producers(sch)
    main = _find_dense_block(sch)
    if main is not None:
        try:
            _prepack_weights(sch, main, func, config)
            _schedule_dense(sch, main, config)
            _schedule_rest(sch, config, skip={main_name(sch, main)})
            return sch.mod["main"]
        except Exception as err:  # fall back to the generic schedule, never fail the build
            logger.debug("dense schedule failed for %s: %s", func, err)
            sch = s_tir.Schedule(func)
            _inline_producers(sch)
    _schedule_rest(sch, config, skip=set())
    return sch.mod["main"]


def _prepack_weights(sch, block, func, config: HostScheduleConfig) -> None:
    """Pack a constant weight [..., N] to [N / T, ..., T] so the tile's loads are contiguous.

    The packing is a layout-rewrite block that ``SplitLayoutRewritePreproc`` moves out of the
    kernel and ``FoldConstant`` applies to the weights at compile time.
    """
    free = func.attrs.get("layout_free_buffers") if func.attrs is not None else None
    if not free:
        return
    # Parameters and their buffers share a name in TVMScript-built and fused prim_funcs.
    free_names = {tvm_compat.param_name(func.params[int(i)]) for i in free}
    spatial = [int(iv.dom.extent) for iv in sch.get(block).iter_vars if iv.iter_type == 0]
    if len(spatial) < 2:
        return
    col_ext = spatial[-1]
    tile, _ = _register_tile(col_ext, spatial[-2], config)  # the tile _schedule_dense uses
    if tile < 4:
        return
    for index, region in enumerate(sch.get(block).reads):
        buf = tvm_compat.region_buffer(region)
        if buf.name in free_names and len(buf.shape) >= 2 and int(buf.shape[-1]) == col_ext:
            packed = sch.cache_read(block, index, "global")
            sch.annotate(packed, "meta_schedule.layout_rewrite_preproc", True)
            sch.transform_layout(
                block, ("read", index),
                lambda *idx: (idx[-1] // tile, *idx[:-1], idx[-1] % tile),
            )
            return


def has_layout_rewrite(func) -> bool:
    """Whether a kernel has a weight pre-pack stage (:func:`_prepack_weights`) for
    ``SplitLayoutRewritePreproc`` to split out."""
    from tvm import s_tir

    try:
        sch = s_tir.Schedule(func)
    except Exception:  # not a block-structured kernel: nothing was packed
        return False
    return any("meta_schedule.layout_rewrite_preproc" in sch.get(b).annotations
               for b in _blocks(sch))


def main_name(sch, block) -> str:
    return sch.get(block).name_hint


def _blocks(sch):
    root = sch.get_sblock("root") if _has_root(sch) else None
    return list(sch.get_child_blocks(root)) if root is not None else []


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:
        return False


def _is_reduction(sch, block) -> bool:
    from tvm.tirx import IterVar

    return any(iv.iter_type == IterVar.CommReduce for iv in sch.get(block).iter_vars)


def _inline_producers(sch) -> None:
    """Inline every elementwise/injective block into its consumers, then epilogues upward."""
    blocks = _blocks(sch)
    for block in blocks[:-1]:
        if _is_reduction(sch, block) or _is_pad(sch, block):
            continue
        try:
            sch.compute_inline(block)
        except Exception:
            pass
    for block in reversed(_blocks(sch)):
        if _is_reduction(sch, block):
            continue
        try:
            sch.reverse_compute_inline(block)
        except Exception:
            pass


def _is_pad(sch, block) -> bool:
    return "pad" in sch.get(block).name_hint


def _find_dense_block(sch):
    """The conv2d_nhwc or matmul reduction block, if the function has one; also a depthwise
    NHWC convolution (channels innermost: the same register tiling, one input channel per
    output channel)."""
    for block in _blocks(sch):
        name = sch.get(block).name_hint
        if _is_reduction(sch, block) and (name.startswith("conv2d_nhwc") or name in
                                          ("matmul", "T_matmul_NN", "T_dense", "NT_matmul")
                                          or _is_depthwise_nhwc(sch, block)):
            return block
    return None


def _is_depthwise_nhwc(sch, block) -> bool:
    from tvm.tirx import IterVar

    stmt = sch.get(block)
    if not stmt.name_hint.startswith("group_conv2d_nhwc"):
        return False
    reduce_ = [iv for iv in stmt.iter_vars if iv.iter_type == IterVar.CommReduce]
    return len(reduce_) == 3 and int(reduce_[-1].dom.extent) == 1  # one channel per group


def _extent(sch, loop) -> int | None:
    from tvm.tirx import IntImm

    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, IntImm) else None


def _split_divisor(extent: int, want: int) -> int:
    for f in range(min(want, extent), 0, -1):
        if extent % f == 0:
            return f
    return 1


def _register_tile(cols: int, rows: int, config: HostScheduleConfig) -> tuple[int, int]:
    """(column tile, row tile) with the most accumulators that fit the register budget.

    Ties prefer wider column tiles: fewer broadcasts per FMA. Column counts that are not a
    multiple of a full vector (24, 40 channels) tile with half- or quarter-width vectors
    (:func:`_tile_lanes`) rather than one odd-width vector.
    """
    lanes = _tile_lanes(cols, config)
    best = (0.0, 0, 0, 0)
    for vectors in range(config.max_tile_vectors * config.vector_lanes // lanes, 0, -1):
        col_tile = vectors * lanes
        if cols % col_tile:
            continue
        row_tile = _split_divisor(rows, max(1, config.accumulator_budget // vectors))
        fmas = vectors * row_tile
        # per reduction step: `vectors` weight loads and `row_tile` broadcasts feed `fmas`
        best = max(best, (fmas / (vectors + row_tile), fmas, vectors, row_tile))
    if best[1] == 0:  # fewer columns than one vector: scalar-width tile
        return _split_divisor(cols, lanes), _split_divisor(rows, config.tile_rows)
    return best[2] * lanes, best[3]


def _tile_lanes(cols: int, config: HostScheduleConfig) -> int:
    """The widest vector (full, half or quarter register, at least 4 lanes) whose width
    divides ``cols``; the full width if none does."""
    lanes = config.vector_lanes
    while lanes > 4 and cols % lanes:
        lanes //= 2
    return lanes if cols % lanes == 0 else config.vector_lanes


def _accumulate_locally(sch, block, at):
    """The block's output accumulated in a local buffer written back at loop ``at``, with
    the elementwise consumers (bias, activation) inlined into the write-back; the cache
    block."""
    cache = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(cache, at, preserve_unit_loops=True)
    for consumer in sch.get_consumers(cache):
        try:
            sch.reverse_compute_inline(consumer)
        except Exception:
            pass
    return cache


def _decompose_vectorized(sch, block, loop) -> None:
    """Split the reduction's init out at ``loop`` (after the update is vectorized: afterwards
    it is no longer a reduction block) and vectorize the init's innermost loop."""
    from tvm.tirx import ForKind

    init = sch.decompose_reduction(block, loop)
    init_loops = sch.get_loops(init)
    if sch.get(init_loops[-1]).kind != ForKind.VECTORIZED:
        sch.vectorize(init_loops[-1])


def _schedule_dense(sch, block, config: HostScheduleConfig) -> None:
    """Register-tile a conv2d_nhwc / matmul block: [rows x (k*lanes)] accumulators."""
    from tvm.tirx import IterVar

    loops = sch.get_loops(block)
    iter_types = [iv.iter_type for iv in sch.get(block).iter_vars]

    spatial = [lp for lp, it in zip(loops, iter_types, strict=True) if it == IterVar.DataPar]
    reduce_ = [lp for lp, it in zip(loops, iter_types, strict=True) if it == IterVar.CommReduce]
    col = spatial[-1]
    row = spatial[-2] if len(spatial) >= 2 else None
    col_ext = _extent(sch, col)
    if col_ext is None or row is None:
        raise ValueError("dense schedule needs static row and column loops")
    row_ext = _extent(sch, row)
    depthwise = _is_depthwise_nhwc(sch, block)
    if depthwise and row_ext is not None and col_ext % config.vector_lanes == 0:
        _schedule_depthwise(sch, block, spatial, reduce_, config)
        return
    col_tile, row_tile = _register_tile(col_ext, row_ext or 1, config)
    if col_tile < 4:
        raise ValueError("too few output columns to vectorise")
    co, ci = sch.split(col, [None, col_tile])
    ro, ri = sch.split(row, [None, row_tile])
    outer = spatial[:-2]
    weight_bytes = col_ext * 4
    for loop in reduce_:
        weight_bytes *= _extent(sch, loop) or 1 << 20
    if depthwise or weight_bytes <= SMALL_WEIGHT_BYTES:
        # Few weights (a depthwise layer, a pointwise conv with K = 16..64): every thread
        # works on whole output pixels (all channel tiles back to back), so the threads
        # write disjoint stretches of the output instead of interleaved channel slices.
        sch.reorder(*outer, ro, co, *reduce_, ri, ci)
        fused = sch.fuse(*outer, ro, co)
    else:
        # Output-channel tiles outermost: each thread streams its own slice of the weights
        # once, and the (smaller) activation tile is re-read from cache per channel tile.
        sch.reorder(co, *outer, ro, *reduce_, ri, ci)
        fused = sch.fuse(co, *outer, ro)
    sch.parallel(fused)
    cache = _accumulate_locally(sch, block, fused)
    # One vector register per innermost iteration: a 3-register tile vectorized as one
    # 48-lane loop is scalarised by LLVM (20x slower); unroll the registers instead.
    lanes = _tile_lanes(col_tile, config)
    lanes = lanes if col_tile % lanes == 0 else col_tile
    cv, ci = sch.split(ci, [None, lanes])
    sch.unroll(ri)
    sch.unroll(cv)
    sch.vectorize(ci)
    wb_loops = sch.get_loops(cache)
    wv, wi = sch.split(wb_loops[-1], [None, lanes])
    sch.unroll(wv)
    sch.vectorize(wi)
    _decompose_vectorized(sch, block, reduce_[0])
    for blk in _blocks(sch):
        if _is_pad(sch, blk):
            _schedule_spatial(sch, blk, config)


def _schedule_depthwise(sch, block, spatial, reduce_, config: HostScheduleConfig) -> None:
    """A depthwise NHWC convolution: one vector of channels by a run of output pixels per
    tile. The input pixels a kernel row of the tile reads are loaded into registers once and
    serve every horizontal tap (a 3-wide kernel over 8 pixels: 10 loads for 24 FMAs, not 24
    loads from L2); the channel tiles of a row run back to back."""
    lanes = config.vector_lanes
    col, row = spatial[-1], spatial[-2]
    row_tile = _split_divisor(_extent(sch, row), _depthwise_rows(sch, block, config))
    co, ci = sch.split(col, [None, lanes])
    ro, ri = sch.split(row, [None, row_tile])
    ry, rx, rc = reduce_
    sch.reorder(*spatial[:-2], ro, co, rc, ry, rx, ri, ci)
    fused = sch.fuse(*spatial[:-2], ro)
    sch.parallel(fused)
    cache = _accumulate_locally(sch, block, co)
    data = next(i for i, region in enumerate(sch.get(block).reads)
                if len(tvm_compat.region_buffer(region).shape) == 4
                and tvm_compat.region_buffer(region).name
                != tvm_compat.region_buffer(sch.get(block).writes[0]).name)
    window = sch.cache_read(block, data, "local")
    sch.compute_at(window, ry, preserve_unit_loops=True)
    sch.unroll(ry)
    wl = sch.get_loops(window)
    sch.unroll(wl[-2])
    sch.vectorize(wl[-1])
    sch.unroll(rx)
    sch.unroll(ri)
    sch.vectorize(ci)
    wb = sch.get_loops(cache)
    sch.unroll(wb[-2])
    sch.vectorize(wb[-1])
    _decompose_vectorized(sch, block, rc)
    for blk in _blocks(sch):
        if _is_pad(sch, blk) and not _is_reduction(sch, blk) and \
                sch.get(blk).name_hint != sch.get(window).name_hint:
            try:  # the padding is read straight into the window: no padded copy
                sch.compute_inline(blk)
            except Exception:
                _schedule_spatial(sch, blk, config)


#: Most output pixels per depthwise tile (one accumulator register each).
DEPTHWISE_ROW_TILE = 8


def _depthwise_rows(sch, block, config: HostScheduleConfig) -> int:
    """Output pixels per depthwise tile such that the accumulators, the input window they
    read along one kernel row ((rows - 1) * stride + (kw - 1) * dilation + 1 pixels) and a
    weight vector fit the register file."""
    stmt = sch.get(block)
    # the data read's column index is xx * stride + rx * dilation
    registers = config.accumulator_budget * 4 // 3
    kw = int(stmt.iter_vars[-2].dom.extent)
    stride, dilation = _column_stride_dilation(stmt)
    rows = DEPTHWISE_ROW_TILE
    while rows > 1 and rows + (rows - 1) * stride + (kw - 1) * dilation + 1 + 1 > registers:
        rows -= 1
    return rows


def _column_stride_dilation(stmt) -> tuple[int, int]:
    """(stride, dilation) along the output columns of a depthwise block: the coefficients of
    its output-column and kernel-column variables in the data read's column index."""
    from tvm import sym

    xx, rx = stmt.iter_vars[2].var, stmt.iter_vars[-2].var
    for region in stmt.reads:
        if len(region.region) != 4:
            continue
        index = region.region[2].min
        coeffs = sym.detect_linear_equation(index, [xx, rx])
        if len(coeffs) == 3:
            try:
                return int(coeffs[0]), int(coeffs[1])
            except TypeError:
                continue
    return 2, 2  # unknown: assume the widest window


#: Weights of a register-tiled kernel small enough to stay in every core's L2 whatever
#: the loop order (see _schedule_dense).
SMALL_WEIGHT_BYTES = 256 * 1024


#: Elements each iteration of a parallel loop should cover at least: TVM's thread pool pays
#: for every iteration, and 16-element iterations made a 150K-element quantize 10x slower.
PARALLEL_GRAIN = 1024


def _parallel_outer(sch, loop, inner_elements: int) -> None:
    """Parallelise ``loop`` in iterations of at least :data:`PARALLEL_GRAIN` elements
    (``inner_elements`` per original iteration)."""
    ext = _extent(sch, loop)
    per = -(-PARALLEL_GRAIN // max(1, inner_elements))
    if ext is not None and per > 1 and ext >= 2 * per:
        loop, _ = sch.split(loop, [None, per])
    sch.parallel(loop)


def _schedule_spatial(sch, block, config: HostScheduleConfig) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    inner_ext = _extent(sch, loops[-1])
    lanes = config.vector_lanes
    if inner_ext is not None and inner_ext >= 4 and len(loops) >= 2:
        outer = sch.fuse(*loops[:-1])
        if inner_ext <= lanes or (inner_ext <= 256 and inner_ext & (inner_ext - 1) == 0):
            sch.vectorize(loops[-1])  # a power of two: whole registers
        else:  # one register wide (a 96-lane vector is scalarised)
            _, vi = sch.split(loops[-1], [None, lanes])
            sch.vectorize(vi)
        _parallel_outer(sch, outer, inner_ext)
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    ext = _extent(sch, fused)
    if ext is not None and ext >= lanes * 2:
        po, vi = sch.split(fused, [None, lanes])
        sch.vectorize(vi)
        _parallel_outer(sch, po, lanes)
    elif ext is not None and ext >= config.parallel_min_extent:
        sch.parallel(fused)


def _schedule_reduction(sch, block, config: HostScheduleConfig) -> None:
    from tvm.tirx import IterVar

    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
    if len(loops) != len(kinds):
        return
    spatial = [lp for lp, k in zip(loops, kinds, strict=True) if k == IterVar.DataPar]
    reduce_ = [lp for lp, k in zip(loops, kinds, strict=True) if k == IterVar.CommReduce]
    if not spatial:
        return
    last_ext = _extent(sch, spatial[-1])
    channel_inner = last_ext is not None and last_ext >= 8 and _reads_last_spatial_innermost(
        sch, block
    )
    if channel_inner:  # e.g. NHWC pooling: reduce over window, vectorise channels
        sch.reorder(*spatial[:-1], *reduce_, spatial[-1])
        if len(spatial) > 1:
            fused = sch.fuse(*spatial[:-1])
            sch.parallel(fused)
        if _has_select(sch, block):
            # TVM's vectorizer turns a per-pixel padding select into per-lane gathers (10x
            # slower); left serial, the contiguous channel loop is vectorised by LLVM.
            return
        sch.vectorize(spatial[-1])
        _decompose_vectorized(sch, block, reduce_[0])
        return
    if len(reduce_) == 1 and _rfactor_rows(sch, block, spatial, reduce_[0], config):
        return
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    ext = _extent(sch, fused)
    if ext is not None and ext >= config.parallel_min_extent:
        sch.parallel(fused)


def _rfactor_rows(sch, block, spatial, reduce_loop, config: HostScheduleConfig) -> bool:
    """A row reduction along the inputs' contiguous axis (softmax's max and sum, layer norm's
    mean): one vector of partial results per row (rfactor), so the reduction vectorises
    instead of running one scalar dependency chain. False if it does not apply."""
    lanes = config.vector_lanes
    ext = _extent(sch, reduce_loop)
    if ext is None or ext % lanes or ext < 2 * lanes:
        return False
    try:
        _, ki = sch.split(reduce_loop, [None, lanes])
        rf = sch.rfactor(ki, len(spatial))
        rf_loops = sch.get_loops(rf)  # spatial..., ko (reduce), ki (the partials' axis)
        outer = sch.fuse(*rf_loops[:len(spatial)])
        sch.parallel(outer)
        sch.vectorize(sch.get_loops(rf)[-1])  # before decomposing (see _schedule_dense)
        init = sch.decompose_reduction(rf, sch.get_loops(rf)[-2])
        sch.vectorize(sch.get_loops(init)[-1])
        final = sch.get_loops(block)
        fused = sch.fuse(*final[:len(spatial)])
        sch.parallel(fused)
    except Exception as err:  # keep whatever applied; the kernel stays correct
        logger.debug("rfactor skipped: %s", err)
        return False
    return True


def _has_select(sch, block) -> bool:
    """Whether the block's body contains an ``if_then_else`` (read from its printed form:
    TVM 0.27 has no Python visitor for TIR statements)."""
    return "if_then_else" in str(sch.get(block).body)


def _reads_last_spatial_innermost(sch, block) -> bool:
    """Whether some input's contiguous axis is the block's last spatial axis and none is a
    reduction axis (a row reduction such as softmax's sum must not be turned into gathers
    across rows)."""
    stmt = sch.get(block)
    last_var = [iv.var for iv in stmt.iter_vars if iv.iter_type == 0][-1]
    reduce_vars = [iv.var for iv in stmt.iter_vars if iv.iter_type != 0]
    found = False
    for region in stmt.reads:
        innermost = region.region[-1].min if region.region else None
        if innermost is None:
            continue
        if any(innermost.same_as(v) for v in reduce_vars):
            return False
        found = found or innermost.same_as(last_var)
    return found


def _schedule_rest(sch, config: HostScheduleConfig, skip: set[str]) -> None:
    for block in _blocks(sch):
        name = sch.get(block).name_hint
        if name in skip or _already_scheduled(sch, block):
            continue
        try:
            if _is_reduction(sch, block):
                _schedule_reduction(sch, block, config)
            else:
                _schedule_spatial(sch, block, config)
        except Exception as err:
            logger.debug("generic schedule skipped block %s: %s", name, err)


def _already_scheduled(sch, block) -> bool:
    from tvm.tirx import ForKind

    return any(sch.get(lp).kind != ForKind.SERIAL for lp in sch.get_loops(block))
