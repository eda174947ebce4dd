"""TIR kernels of the quantized operators (the integer semantics of ``quant_reference``).

Every function returns a ``PrimFunc`` for one operator instance; zero points and other
scalars are baked in as constants, per-channel vectors are buffer arguments. The GEMM
kernels (``conv2d``, ``dense``) have the shape the NPU schedules expect — an optional
``im2col`` gather, an int8 ``matmul`` block accumulating in int32 and a ``requant`` block
(bias, fixed-point multiplier, rounding shift, zero point, clamp) — and carry the attribute
``lepton.gemm`` so the lepton target can tensorize them; on the host they get the host
schedules like any other kernel.
"""

from __future__ import annotations

from typing import Any

GEMM_ATTR = "lepton.gemm"  # value: "conv2d" | "dense"
_OPAQUE = 8  # relax OpPatternKind.kOpaque: FuseOps leaves the kernel alone


def reduced_shape(shape: Any, axes: Any, keepdims: bool) -> tuple:
    """A reduction's output shape: ``axes`` dropped, or kept as 1 with ``keepdims``."""
    return tuple(1 if i in axes else d for i, d in enumerate(shape)) if keepdims else \
        tuple(d for i, d in enumerate(shape) if i not in axes)


def reduction_index(index: Any, reduced: list, axes: Any, rank: int, keepdims: bool) -> list:
    """The input index a reduction reads at output ``index``: the output's dims in order,
    the reduce axes ``reduced`` at ``axes`` (a kept size-1 dim of ``keepdims`` skipped)."""
    kept, red = iter(index), iter(reduced)
    full = []
    for i in range(rank):
        if i in axes:
            full.append(next(red))
            if keepdims:
                next(kept)
        else:
            full.append(next(kept))
    return full


def opaque(func: Any) -> Any:
    """``func`` marked opaque to fusion (FuseOps leaves the kernel alone)."""
    return func.with_attr("op_pattern", _OPAQUE)


def lut_func(shape: tuple[int, ...]) -> Any:
    """int8 -> int8 through a 256-entry int32 table ``T`` indexed by ``x + 128``
    (``reference.lut``)."""
    from tvm import te, tirx

    x = te.placeholder(shape, "int8", name="X")
    table = te.placeholder((256,), "int32", name="T")
    out = te.compute(shape, lambda *i: tirx.Cast("int8", tirx.max(tirx.min(
        table[tirx.Cast("int32", x(*i)) + 128], 127), -128)), name="lut")
    return opaque(te.create_prim_func([x, table, out]))


def transpose_func(shape: tuple[int, ...], axes: tuple[int, ...]) -> Any:
    """int8 ``permute_dims``: ``OUT[i] = X[i permuted back]``."""
    from tvm import te

    x = te.placeholder(shape, "int8", name="X")
    out_shape = tuple(shape[a] for a in axes)

    def read(*i: Any) -> Any:
        index = [None] * len(shape)
        for o, a in enumerate(axes):
            index[a] = i[o]
        return x(*index)

    return opaque(te.create_prim_func([x, te.compute(out_shape, read, name="transpose")]))


def _finish(func: Any, gemm: str | None = None, layer: list[int] | None = None) -> Any:
    """Mark a kernel opaque to fusion; ``gemm``: its :data:`GEMM_ATTR`; ``layer``: its
    geometry for the NPU's fast mode (``npu_fast.LAYER_ATTR``)."""
    from lepton_compiler.target.npu_fast import LAYER_ATTR

    func = func.with_attr("op_pattern", _OPAQUE)
    func = func.with_attr(GEMM_ATTR, gemm) if gemm else func
    return func.with_attr(LAYER_ATTR, layer) if layer else func


def _elementwise(shape: tuple[int, ...], inputs: list[tuple[str, str]], name: str,
                 body: Any) -> Any:
    """A fusable N-D elementwise kernel: ``body(*loaded inputs) -> value``."""
    from tvm import te

    placeholders = [te.placeholder(shape, dtype, name=n) for n, dtype in inputs]
    out = te.compute(shape, lambda *i: body(*(p(*i) for p in placeholders)), name=name)
    return te.create_prim_func([*placeholders, out]).with_attr("op_pattern", _OPAQUE)


def quantize_func(shape: tuple[int, ...], scale: float, zero_point: int) -> Any:
    """float32 -> int8: ``clamp(floor(x / scale + 0.5) + zero_point, -128, 127)``."""
    from tvm import tirx

    def f32(v: float) -> Any:
        return tirx.const(v, "float32")

    return _elementwise(shape, [("X", "float32")], "quantize", lambda x: tirx.Cast(
        "int8", tirx.max(tirx.min(tirx.floor(x / f32(scale) + f32(0.5)) + f32(zero_point),
                                  f32(127)), f32(-128))))


def dequantize_func(shape: tuple[int, ...], scale: float, zero_point: int) -> Any:
    """int8 -> float32: ``float(q - zero_point) * scale``."""
    from tvm import tirx

    return _elementwise(shape, [("Q", "int8")], "dequantize", lambda q: tirx.Cast(
        "float32", tirx.Cast("int32", q) - zero_point) * tirx.const(scale, "float32"))


def dequantize_channels_func(shape: tuple[int, ...], zero_point: int) -> Any:
    """int8 -> float32 with one scale per channel (the last axis):
    ``float(Q - zero_point) * S[c]``."""
    from tvm import te, tirx

    q = te.placeholder(shape, "int8", name="Q")
    scales = te.placeholder((shape[-1],), "float32", name="S")
    out = te.compute(shape, lambda *i: tirx.Cast(
        "float32", tirx.Cast("int32", q(*i)) - zero_point) * scales[i[-1]], name="dequantize")
    return te.create_prim_func([q, scales, out]).with_attr("op_pattern", _OPAQUE)


def dense_func(m: int, k: int, n: int) -> Any:
    """``OUT[m, n] = requant(X[m, k] @ W[k, n] + BIAS)`` (int8 operands, int32 products).

    The input zero point is folded into ``BIAS`` by the quantizer (``- zp * sum_k W``).
    """
    from tvm.script import tirx as T

    from lepton_compiler.target.intrinsics import requant_macro
    from lepton_compiler.target.npu_fast import dense_layer

    requant_store = requant_macro()

    @T.prim_func(s_tir=True)
    def dense(X: T.Buffer((m, k), "int8"), W: T.Buffer((k, n), "int8"),
              BIAS: T.Buffer((n,), "int32"), MUL: T.Buffer((n,), "int32"),
              SH: T.Buffer((n,), "int32"), QP: T.Buffer((3,), "int32"),
              OUT: T.Buffer((m, n), "int8")) -> None:
        C = T.sblock_alloc_buffer((m, n), "int32")
        for i, j, kk in T.grid(m, n, k):
            with T.sblock("matmul"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, kk])
                with T.init():
                    C[vi, vj] = 0
                C[vi, vj] = C[vi, vj] + T.cast(X[vi, vk], "int32") * T.cast(W[vk, vj], "int32")
        for i, j in T.grid(m, n):
            with T.sblock("requant"):
                vi, vj = T.axis.remap("SS", [i, j])
                requant_store(OUT, C, BIAS, MUL, SH, QP, vi, vj)

    return _finish(dense, "dense", dense_layer(m, k, n))


def im2col_gemm_macro(shape: Any, input_zero_point: int) -> Any:
    """The one im2col + GEMM body of an NHWC int8 conv2d (groups 1), as a TVMScript macro
    over ``X`` (NHWC), ``W`` (HWIO as ``[KH*KW*Cin, Cout]``), the gather buffer ``cols``
    ``[N*OH*OW, KH*KW*Cin]`` and the int32 product ``C``: blocks ``im2col`` and ``matmul``.

    Padding pixels take ``input_zero_point`` (real value 0). Used by the fused graph kernel
    (:func:`conv2d_func`) and the stand-alone NPU kernel (``npu_kernels.int8_conv2d_func``).
    """
    from tvm.script import tirx as T

    s = shape
    oh, ow = s.out_hw
    m, n_out, k = s.gemm
    sh, sw = s.stride
    dh, dw = s.dilation
    top, left = s.padding[0], s.padding[1]
    h, w, kh, kw_, cin, n = s.h, s.w, s.kh, s.kw, s.cin, s.n
    zp = input_zero_point

    @T.macro(hygienic=True)
    def im2col_gemm(X, W, cols, C):
        # One iteration per (pixel, window tap, channel): affine addresses, the channel run
        # contiguous on both sides (the DMA engine's address generation).
        for b, oy, ox, ky, kx, c in T.grid(n, oh, ow, kh, kw_, cin):
            with T.sblock("im2col"):
                vb, voy, vox, vky, vkx, vc = T.axis.remap("SSSSSS", [b, oy, ox, ky, kx, c])
                cols[(vb * oh + voy) * ow + vox, (vky * kw_ + vkx) * cin + vc] = T.if_then_else(
                    0 <= voy * sh + vky * dh - top and voy * sh + vky * dh - top < h
                    and 0 <= vox * sw + vkx * dw - left and vox * sw + vkx * dw - left < w,
                    X[vb, T.max(T.min(voy * sh + vky * dh - top, h - 1), 0),
                      T.max(T.min(vox * sw + vkx * dw - left, w - 1), 0), vc],
                    T.int8(zp))
        for i, j, kk in T.grid(m, n_out, k):
            with T.sblock("matmul"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, kk])
                with T.init():
                    C[vi, vj] = 0
                C[vi, vj] = C[vi, vj] + T.cast(cols[vi, vk], "int32") * T.cast(W[vk, vj], "int32")

    return im2col_gemm


def conv2d_func(shape: Any, input_zero_point: int) -> Any:
    """NHWC int8 conv2d (groups 1) as im2col + GEMM + requant; ``shape`` is a
    ``Conv2dShape``. The output is ``OUT[N*OH*OW, Cout]`` in NHWC memory order (see
    :func:`im2col_gemm_macro` for the body).
    """
    from tvm.script import tirx as T

    from lepton_compiler.target.intrinsics import requant_macro
    from lepton_compiler.target.npu_fast import conv_layer

    requant_store = requant_macro()
    im2col_gemm = im2col_gemm_macro(shape, input_zero_point)
    s = shape
    m, n_out, k = s.gemm

    @T.prim_func(s_tir=True)
    def conv2d(X: T.Buffer((s.n, s.h, s.w, s.cin), "int8"), W: T.Buffer((k, n_out), "int8"),
               BIAS: T.Buffer((n_out,), "int32"), MUL: T.Buffer((n_out,), "int32"),
               SH: T.Buffer((n_out,), "int32"), QP: T.Buffer((3,), "int32"),
               OUT: T.Buffer((m, n_out), "int8")) -> None:
        cols = T.sblock_alloc_buffer((m, k), "int8")
        C = T.sblock_alloc_buffer((m, n_out), "int32")
        im2col_gemm(X, W, cols, C)
        for i, j in T.grid(m, n_out):
            with T.sblock("requant"):
                vi, vj = T.axis.remap("SS", [i, j])
                requant_store(OUT, C, BIAS, MUL, SH, QP, vi, vj)

    return _finish(conv2d, "conv2d", conv_layer(shape, input_zero_point))


def add_func(shape: tuple[int, ...], za: int, ma: int, zb: int, mb: int, shift: int,
             zo: int, lo: int, hi: int) -> Any:
    """Residual add of two int8 tensors with their own scales (see ``reference.add``)."""
    from tvm import tirx

    def i64(v: int) -> Any:
        return tirx.const(v, "int64")

    def body(a: Any, b: Any) -> Any:
        acc = ((tirx.Cast("int64", a) - i64(za)) * i64(ma)
               + (tirx.Cast("int64", b) - i64(zb)) * i64(mb) + i64(1 << (shift - 1)))
        return tirx.Cast("int8", tirx.max(tirx.min(
            tirx.shift_right(acc, i64(shift)) + i64(zo), i64(hi)), i64(lo)))

    return _elementwise(shape, [("A", "int8"), ("B", "int8")], "add", body)


def rescale_func(shape: tuple[int, ...], zi: int, multiplier: int, shift: int,
                 zo: int) -> Any:
    """int8 -> int8 in another quantization (see ``reference.rescale``)."""
    from tvm import tirx

    def i64(v: int) -> Any:
        return tirx.const(v, "int64")

    def body(q: Any) -> Any:
        acc = (tirx.Cast("int64", q) - i64(zi)) * i64(multiplier) + i64(1 << (shift - 1))
        return tirx.Cast("int8", tirx.max(tirx.min(
            tirx.shift_right(acc, i64(shift)) + i64(zo), i64(127)), i64(-128)))

    return _elementwise(shape, [("Q", "int8")], "rescale", body)


def clamp_func(shape: tuple[int, ...], lo: int, hi: int) -> Any:
    """int8 clamp in the input's own quantization (ReLU: ``lo = zero_point``; ReLU6 also
    ``hi = zero_point + round(6 / scale)``)."""
    from tvm import tirx

    return _elementwise(shape, [("A", "int8")], "clamp", lambda a: tirx.min(
        tirx.max(a, tirx.const(lo, "int8")), tirx.const(hi, "int8")))


def mean_func(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool, zi: int,
              multiplier: int, shift: int, zo: int) -> Any:
    """int8 mean over ``axes`` into the output's quantization (see ``reference.mean``)."""
    from tvm import te, tirx

    count = 1
    for a in axes:
        count *= shape[a]
    x = te.placeholder(shape, "int8", name="X")
    red = [te.reduce_axis((0, shape[a]), name=f"r{a}") for a in axes]
    out_shape = reduced_shape(shape, axes, keepdims)

    def total(*idx):
        full = reduction_index(idx, red, axes, len(shape), keepdims)
        return te.sum(tirx.Cast("int32", x(*full)), axis=red)

    def i64(v: int) -> Any:
        return tirx.const(v, "int64")

    acc = te.compute(out_shape, total, name="sum")

    def rescale(*i):
        wide = (tirx.Cast("int64", acc(*i)) - i64(count * zi)) * i64(multiplier) + \
            i64(1 << (shift - 1))
        return tirx.Cast("int8", tirx.max(tirx.min(
            tirx.shift_right(wide, i64(shift)) + i64(zo), i64(127)), i64(-128)))

    out = te.compute(out_shape, rescale, name="mean")
    return te.create_prim_func([x, out]).with_attr("op_pattern", _OPAQUE)


def max_pool2d_func(n: int, h: int, w: int, c: int, pool: tuple[int, int],
                    stride: tuple[int, int], padding: tuple[int, int, int, int],
                    out_hw: tuple[int, int]) -> Any:
    """NHWC int8 max pooling; padding never wins (it is below every int8 value)."""
    from tvm.script import tirx as T

    oh, ow = out_hw
    ph, pw = pool
    sh, sw = stride
    top, left = padding[0], padding[1]

    @T.prim_func(s_tir=True)
    def max_pool2d(X: T.Buffer((n, h, w, c), "int8"),
                   OUT: T.Buffer((n, oh, ow, c), "int8")) -> None:
        for b, y, x, ch, ky, kx in T.grid(n, oh, ow, c, ph, pw):
            with T.sblock("pool"):
                vb, vy, vx, vc, vky, vkx = T.axis.remap("SSSSRR", [b, y, x, ch, ky, kx])
                with T.init():
                    OUT[vb, vy, vx, vc] = T.int8(-128)
                OUT[vb, vy, vx, vc] = T.max(OUT[vb, vy, vx, vc], T.if_then_else(
                    0 <= vy * sh + vky - top and vy * sh + vky - top < h
                    and 0 <= vx * sw + vkx - left and vx * sw + vkx - left < w,
                    X[vb, T.max(T.min(vy * sh + vky - top, h - 1), 0),
                      T.max(T.min(vx * sw + vkx - left, w - 1), 0), vc],
                    T.int8(-128)))

    return max_pool2d.with_attr("op_pattern", _OPAQUE)


def avg_pool2d_func(n: int, h: int, w: int, c: int, pool: tuple[int, int],
                    stride: tuple[int, int], out_hw: tuple[int, int]) -> Any:
    """NHWC int8 average pooling without padding, in the input's own quantization: the
    window sum ``s`` over ``count`` pixels gives ``floor((2 s + count) / (2 count))``
    (rounded half up)."""
    from tvm.script import tirx as T

    oh, ow = out_hw
    ph, pw = pool
    sh, sw = stride
    count = ph * pw

    @T.prim_func(s_tir=True)
    def avg_pool2d(X: T.Buffer((n, h, w, c), "int8"),
                   OUT: T.Buffer((n, oh, ow, c), "int8")) -> None:
        acc = T.sblock_alloc_buffer((n, oh, ow, c), "int32")
        for b, y, x, ch, ky, kx in T.grid(n, oh, ow, c, ph, pw):
            with T.sblock("sum"):
                vb, vy, vx, vc, vky, vkx = T.axis.remap("SSSSRR", [b, y, x, ch, ky, kx])
                with T.init():
                    acc[vb, vy, vx, vc] = 0
                acc[vb, vy, vx, vc] = acc[vb, vy, vx, vc] + T.Cast(
                    "int32", X[vb, vy * sh + vky, vx * sw + vkx, vc])
        for b, y, x, ch in T.grid(n, oh, ow, c):
            with T.sblock("mean"):
                vb, vy, vx, vc = T.axis.remap("SSSS", [b, y, x, ch])
                OUT[vb, vy, vx, vc] = T.Cast("int8", T.floordiv(
                    2 * acc[vb, vy, vx, vc] + count, 2 * count))

    return avg_pool2d.with_attr("op_pattern", _OPAQUE)


def grouped_conv2d_func(shape: Any, groups: int, input_zero_point: int) -> Any:
    """NHWC int8 grouped/depthwise conv2d with requantization, for the host.

    ``W`` is HWIO ``[KH, KW, Cin/groups, Cout]``; output channel ``o`` reads the input
    channels of group ``o // (Cout/groups)``. Padding takes the input zero point.
    """
    from tvm.script import tirx as T

    from lepton_compiler.target.intrinsics import requant_macro

    requant_store = requant_macro()
    s = shape
    oh, ow = s.out_hw
    sh, sw = s.stride
    dh, dw = s.dilation
    top, left = s.padding[0], s.padding[1]
    cin_g, cout_g = s.cin // groups, s.cout // groups
    h, w, n, cout = s.h, s.w, s.n, s.cout
    zp = input_zero_point
    m = n * oh * ow

    @T.prim_func(s_tir=True)
    def grouped_conv2d(X: T.Buffer((n, h, w, s.cin), "int8"),
                       W: T.Buffer((s.kh, s.kw, cin_g, cout), "int8"),
                       BIAS: T.Buffer((cout,), "int32"), MUL: T.Buffer((cout,), "int32"),
                       SH: T.Buffer((cout,), "int32"), QP: T.Buffer((3,), "int32"),
                       OUT: T.Buffer((m, cout), "int8")) -> None:
        C = T.sblock_alloc_buffer((m, cout), "int32")
        for r, o, ky, kx, i in T.grid(m, cout, s.kh, s.kw, cin_g):
            with T.sblock("conv"):
                vr, vo, vky, vkx, vi = T.axis.remap("SSRRR", [r, o, ky, kx, i])
                with T.init():
                    C[vr, vo] = 0
                C[vr, vo] = C[vr, vo] + T.Cast("int32", T.if_then_else(
                    0 <= vr % (oh * ow) // ow * sh + vky * dh - top
                    and vr % (oh * ow) // ow * sh + vky * dh - top < h
                    and 0 <= vr % ow * sw + vkx * dw - left
                    and vr % ow * sw + vkx * dw - left < w,
                    X[vr // (oh * ow),
                      T.max(T.min(vr % (oh * ow) // ow * sh + vky * dh - top, h - 1), 0),
                      T.max(T.min(vr % ow * sw + vkx * dw - left, w - 1), 0),
                      vo // cout_g * cin_g + vi],
                    T.int8(zp))) * T.Cast("int32", W[vky, vkx, vi, vo])
        for i, j in T.grid(m, cout):
            with T.sblock("requant"):
                vi, vj = T.axis.remap("SS", [i, j])
                requant_store(OUT, C, BIAS, MUL, SH, QP, vi, vj)

    if cin_g == 1 and cout_g == 1:  # depthwise: channels innermost, so they vectorise
        @T.prim_func(s_tir=True)
        def depthwise_conv2d(X: T.Buffer((n, h, w, s.cin), "int8"),
                             W: T.Buffer((s.kh, s.kw, 1, cout), "int8"),
                             BIAS: T.Buffer((cout,), "int32"), MUL: T.Buffer((cout,), "int32"),
                             SH: T.Buffer((cout,), "int32"), QP: T.Buffer((3,), "int32"),
                             OUT: T.Buffer((m, cout), "int8")) -> None:
            C = T.sblock_alloc_buffer((m, cout), "int32")
            for r, o, ky, kx in T.grid(m, cout, s.kh, s.kw):
                with T.sblock("conv"):
                    vr, vo, vky, vkx = T.axis.remap("SSRR", [r, o, ky, kx])
                    with T.init():
                        C[vr, vo] = 0
                    C[vr, vo] = C[vr, vo] + T.Cast("int32", T.if_then_else(
                        0 <= vr % (oh * ow) // ow * sh + vky * dh - top
                        and vr % (oh * ow) // ow * sh + vky * dh - top < h
                        and 0 <= vr % ow * sw + vkx * dw - left
                        and vr % ow * sw + vkx * dw - left < w,
                        X[vr // (oh * ow),
                          T.max(T.min(vr % (oh * ow) // ow * sh + vky * dh - top, h - 1), 0),
                          T.max(T.min(vr % ow * sw + vkx * dw - left, w - 1), 0), vo],
                        T.int8(zp))) * T.Cast("int32", W[vky, vkx, 0, vo])
            for i, j in T.grid(m, cout):
                with T.sblock("requant"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    requant_store(OUT, C, BIAS, MUL, SH, QP, vi, vj)

        from lepton_compiler.target.npu_fast import DEPTHWISE_ATTR, conv_layer

        # With the NPU's host library linked in, lowering hands the layer to its
        # lepton_dwconv_i8 (npu_fast.with_depthwise_call); these loops are the fallback.
        return depthwise_conv2d.with_attr("op_pattern", _OPAQUE).with_attr(
            DEPTHWISE_ATTR, conv_layer(shape, zp))
    return grouped_conv2d.with_attr("op_pattern", _OPAQUE)


# --- Unfused building blocks (build(..., fuse=False)): the same arithmetic, one op each ----

def gemm_acc_func(m: int, k: int, n: int) -> Any:
    """``C[m, n] = X[m, k] @ W[k, n]`` (int8 operands, int32 result), on its own."""
    from tvm import te, tirx

    x = te.placeholder((m, k), "int8", name="X")
    w = te.placeholder((k, n), "int8", name="W")
    r = te.reduce_axis((0, k), name="r")
    c = te.compute((m, n), lambda i, j: te.sum(
        tirx.Cast("int32", x[i, r]) * tirx.Cast("int32", w[r, j]), axis=r), name="matmul")
    return te.create_prim_func([x, w, c]).with_attr("op_pattern", _OPAQUE)


def im2col_func(shape: Any, input_zero_point: int) -> Any:
    """The conv2d window gather on its own: ``X`` NHWC -> ``[N*OH*OW, KH*KW*Cin]``."""
    from tvm import te, tirx

    s = shape
    oh, ow = s.out_hw
    m, _, k = s.gemm
    sh, sw = s.stride
    dh, dw = s.dilation
    top, left = s.padding[0], s.padding[1]
    x = te.placeholder((s.n, s.h, s.w, s.cin), "int8", name="X")

    def gather(r, q):
        y = r % (oh * ow) // ow * sh + q // (s.kw * s.cin) * dh - top
        xx = r % ow * sw + q % (s.kw * s.cin) // s.cin * dw - left
        inside = tirx.all(y >= 0, y < s.h, xx >= 0, xx < s.w)
        return tirx.if_then_else(inside, x[r // (oh * ow), tirx.max(tirx.min(y, s.h - 1), 0),
                                           tirx.max(tirx.min(xx, s.w - 1), 0), q % s.cin],
                                 tirx.const(input_zero_point, "int8"))

    cols = te.compute((m, k), gather, name="im2col")
    return te.create_prim_func([x, cols]).with_attr("op_pattern", _OPAQUE)


def bias_add_func(m: int, n: int) -> Any:
    """``ACC[m, n] + BIAS[n]`` in int32, on its own."""
    from tvm import te

    acc = te.placeholder((m, n), "int32", name="ACC")
    bias = te.placeholder((n,), "int32", name="BIAS")
    out = te.compute((m, n), lambda i, j: acc[i, j] + bias[j], name="bias_add")
    return te.create_prim_func([acc, bias, out]).with_attr("op_pattern", _OPAQUE)


def requant_func(m: int, n: int) -> Any:
    """Per-channel requantization (zero bias) of ``ACC[m, n]`` to int8, on its own."""
    from tvm.script import tirx as T

    from lepton_compiler.target.intrinsics import requant_macro

    requant_store = requant_macro()

    @T.prim_func(s_tir=True)
    def requant(ACC: T.Buffer((m, n), "int32"), BIAS: T.Buffer((n,), "int32"),
                MUL: T.Buffer((n,), "int32"), SH: T.Buffer((n,), "int32"),
                QP: T.Buffer((3,), "int32"), OUT: T.Buffer((m, n), "int8")) -> None:
        for i, j in T.grid(m, n):
            with T.sblock("requant"):
                vi, vj = T.axis.remap("SS", [i, j])
                requant_store(OUT, ACC, BIAS, MUL, SH, QP, vi, vj)

    return requant.with_attr("op_pattern", _OPAQUE)


def batch_matmul_func(batch: int, m: int, k: int, n: int, za: int, zb: int, multiplier: int,
                      shift: int, zo: int, lo: int, hi: int) -> Any:
    """Activation x activation int8 matmul ``OUT[b] = requant(sum_k (A[b]-za) (B[b]-zb))``.

    The product runs on the GEMM instruction over the raw int8 operands; the zero points
    enter through row sums of A and column sums of B:
    ``sum (a-za)(b-zb) = sum ab - zb*rowsum(a) - za*colsum(b) + k*za*zb`` (exact in int64).
    """
    from tvm.script import tirx as T

    kzz = k * za * zb

    @T.prim_func(s_tir=True)
    def batch_matmul(A: T.Buffer((batch, m, k), "int8"), B: T.Buffer((batch, k, n), "int8"),
                     OUT: T.Buffer((batch, m, n), "int8")) -> None:
        C = T.sblock_alloc_buffer((batch, m, n), "int32")
        RA = T.sblock_alloc_buffer((batch, m), "int32")
        CB = T.sblock_alloc_buffer((batch, n), "int32")
        for b, i, j, kk in T.grid(batch, m, n, k):
            with T.sblock("matmul"):
                vb, vi, vj, vk = T.axis.remap("SSSR", [b, i, j, kk])
                with T.init():
                    C[vb, vi, vj] = 0
                C[vb, vi, vj] = C[vb, vi, vj] + T.cast(A[vb, vi, vk], "int32") * T.cast(
                    B[vb, vk, vj], "int32")
        for b, i, kk in T.grid(batch, m, k):
            with T.sblock("rowsum"):
                vb, vi, vk = T.axis.remap("SSR", [b, i, kk])
                with T.init():
                    RA[vb, vi] = 0
                RA[vb, vi] = RA[vb, vi] + T.cast(A[vb, vi, vk], "int32")
        for b, j, kk in T.grid(batch, n, k):
            with T.sblock("colsum"):
                vb, vj, vk = T.axis.remap("SSR", [b, j, kk])
                with T.init():
                    CB[vb, vj] = 0
                CB[vb, vj] = CB[vb, vj] + T.cast(B[vb, vk, vj], "int32")
        for b, i, j in T.grid(batch, m, n):
            with T.sblock("requant_zp"):
                vb, vi, vj = T.axis.remap("SSS", [b, i, j])
                OUT[vb, vi, vj] = T.Cast("int8", T.max(T.min(T.shift_right(
                    (T.Cast("int64", C[vb, vi, vj]) - T.int64(zb) * T.Cast("int64", RA[vb, vi])
                     - T.int64(za) * T.Cast("int64", CB[vb, vj]) + T.int64(kzz))
                    * T.int64(multiplier) + T.shift_left(T.int64(1), T.int64(shift - 1)),
                    T.int64(shift)) + T.int64(zo), T.int64(hi)), T.int64(lo)))

    return _finish(batch_matmul, "matmul")
