"""Fast mode of the NPU GEMM kernels: a whole layer per call on weights packed at compile time.

A conv2d or dense kernel scheduled for the NPU (``npu_schedule``) is an instruction stream: DMA,
GEMM and requantize instructions per tile, which sim mode executes and counts. In fast mode
the same kernel instead hands its whole layer to ``lepton_layer_i8`` (``csrc/lepton_npu.c``):
register-blocked VNNI micro-kernels over weights packed for them, the im2col gather fused
into packing the activation rows, the requantize epilogue fused, the work split across
threads. Both compute the same integers, so the modes agree bit for bit.

:func:`add_fast_paths` rewrites a scheduled module: each such kernel takes its weights packed
(:func:`pack_weights`, applied to the constant at compile time), tries the fast call first and
otherwise (sim mode) unpacks them and runs its instruction stream unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Kernel attribute: the layer's geometry for the fast call, set by ``qkernels``:
#: ``[n, h, w, cin, cout, kh, kw, sh, sw, dh, dw, top, left, oh, ow, input_zero_point]``
#: (a dense layer is ``n = M`` images of ``1 x 1 x K``).
LAYER_ATTR = "lepton.layer"
#: Kernel attribute: 1 once the kernel takes packed weights and has the fast path.
FAST_ATTR = "lepton.fast"
#: Kernel attribute of a host int8 depthwise conv2d: its geometry, as :data:`LAYER_ATTR`.
DEPTHWISE_ATTR = "lepton.depthwise"
LAYER_EXTERN = "lepton_layer_i8"
DEPTHWISE_EXTERN = "lepton_dwconv_i8"
DEPTHWISE_UNPACK_EXTERN = "lepton_unpack_depthwise"
UNPACK_EXTERN = "lepton_unpack_weights"
COLUMNS = 16  # output columns per packed block: one 512-bit vector of int32
DEPTH = 4     # reduction steps per lane of one vpdpbusd


def packed_shape(k: int, n: int) -> tuple[int, int, int, int]:
    """Shape of the packed form of a ``[k, n]`` weight matrix."""
    return (-(-n // COLUMNS), -(-k // DEPTH), COLUMNS, DEPTH)


def pack_weights(w: np.ndarray) -> np.ndarray:
    """``[K, N]`` int8 weights to the fast layout: per block of 16 output columns,
    ``[ceil(K/4)][16][4]`` bytes of ``w + 128`` as uint8; padding rows and columns are 0."""
    k, n = w.shape
    nb, k4, _, _ = packed_shape(k, n)
    cols = np.zeros((nb * COLUMNS, k4 * DEPTH), np.uint8)
    cols[:n, :k] = (w.T.astype(np.int16) + 128).astype(np.uint8)
    return np.ascontiguousarray(cols.reshape(nb, COLUMNS, k4, DEPTH).transpose(0, 2, 1, 3))


#: int64 requantize terms per block of 16 columns (``COL_TERMS`` in ``lepton_npu.c``).
COL_TERMS = 72


def column_terms(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The per-column requantize terms the fast kernels read, as bytes: per block of 16
    columns (padding columns zero) :data:`COL_TERMS` int64 — bias as 16 int32; mult,
    ``2^(shift-1)`` and shift as 8 int64 lanes each for the even then the odd columns; then as
    16 int32 ``2^(shift-33)`` and ``shift - 32`` (zero where shift < 33)."""
    n = len(bias)
    nb = -(-n // COLUMNS)
    pad = nb * COLUMNS - n

    def lanes(v: np.ndarray, dtype: Any) -> np.ndarray:  # [nb, 16], padding zero
        return np.concatenate([np.asarray(v, dtype), np.zeros(pad, dtype)]).reshape(nb, 16)

    shift64 = lanes(shift, np.int64)
    wide = {"mult": lanes(mult, np.int64),
            "round": np.where(shift64 > 0, np.int64(1) << np.maximum(shift64 - 1, 0), 0),
            "shift": shift64}
    high = shift64 >= 33
    terms = [lanes(bias, np.int32).view(np.int64)]
    for name in ("mult", "round", "shift"):
        terms += [wide[name][:, 0::2], wide[name][:, 1::2]]
    terms.append(np.where(high, np.int64(1) << np.maximum(shift64 - 33, 0), 0)
                 .astype(np.int32).view(np.int64))
    terms.append(np.where(high, shift64 - 32, 0).astype(np.int32).view(np.int64))
    out = np.concatenate(terms, axis=1)
    assert out.shape == (nb, COL_TERMS)
    return np.ascontiguousarray(out).view(np.uint8).reshape(-1)


def pack_layer(w: np.ndarray, bias: np.ndarray, mult: np.ndarray,
               shift: np.ndarray) -> np.ndarray:
    """Everything ``lepton_layer_i8`` reads besides the activations, made at compile time:
    :func:`column_terms` then :func:`pack_weights` of ``w[K, N]``, as one uint8 array."""
    return np.concatenate([column_terms(bias, mult, shift), pack_weights(w).reshape(-1)])


def pack_depthwise(w_hwio: np.ndarray, bias: np.ndarray, mult: np.ndarray,
                   shift: np.ndarray) -> np.ndarray:
    """What ``lepton_dwconv_i8`` reads besides the activations: :func:`column_terms` then
    the ``[KH, KW, 1, C]`` weights as int32 ``(w, 0)`` int16 pairs, ``[KH * KW][C padded to
    16]``, as one uint8 array."""
    kh, kw, _, c = w_hwio.shape
    nb = -(-c // COLUMNS)
    taps = np.zeros((kh * kw, nb * COLUMNS), np.int32)
    taps[:, :c] = w_hwio.reshape(kh * kw, c).astype(np.int16).view(np.uint16)
    return np.concatenate([column_terms(bias, mult, shift), taps.view(np.uint8).reshape(-1)])


def unpack_weights(packed: np.ndarray, k: int, n: int) -> np.ndarray:
    """The inverse of :func:`pack_weights` (what sim mode computes from the packed form)."""
    nb, k4, _, _ = packed.shape
    cols = packed.transpose(0, 2, 1, 3).reshape(nb * COLUMNS, k4 * DEPTH)[:n, :k]
    return (cols.astype(np.int16) - 128).astype(np.int8).T.copy()


def conv_layer(shape: Any, input_zero_point: int) -> list[int]:
    """:data:`LAYER_ATTR` of a conv2d (a ``Conv2dShape``)."""
    oh, ow = shape.out_hw
    return [shape.n, shape.h, shape.w, shape.cin, shape.cout, shape.kh, shape.kw,
            *shape.stride, *shape.dilation, shape.padding[0], shape.padding[1], oh, ow,
            input_zero_point]


def dense_layer(m: int, k: int, n: int) -> list[int]:
    """:data:`LAYER_ATTR` of a dense ``[m, k] x [k, n]`` layer."""
    return [m, 1, 1, k, n, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0]


def _call_first(func: Any, params: list[Any], call: Any, fallback: list[Any],
                allocs: list[Any], after: list[Any] = ()) -> Any:
    """``func`` with ``params``, whose body first makes ``call`` and runs ``fallback``, its
    original body and ``after`` only when the call does not return 1."""
    from tvm import s_tir, tirx

    realize = func.body
    root = realize.block
    steps = [*fallback, root.body, *after]
    body = tirx.IfThenElse(call != 1, tirx.SeqStmt(steps) if len(steps) > 1 else root.body,
                           None)
    root = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body,
                        root.init, [*root.alloc_buffers, *allocs], root.match_buffers,
                        root.annotations)
    return tirx.PrimFunc(params, s_tir.SBlockRealize(realize.iter_values, realize.predicate,
                                                     root), func.ret_type, func.attrs)


def with_depthwise_call(func: Any) -> Any:
    """A host int8 depthwise kernel (parameters ``X, W, BIAS, MUL, SH, QP, OUT``, with
    :data:`DEPTHWISE_ATTR`) taking its constants packed (:func:`pack_depthwise`): it hands
    the layer to ``lepton_dwconv_i8`` (in both modes: it is host work) and unpacks the weights
    for its own loops only if that declines."""
    from tvm import tirx

    params = list(func.params)
    x, w, bias, mult, shift, qp, out = params
    kh, kw, _, c = (int(d) for d in w.shape)
    nb = -(-c // COLUMNS)
    packed = tirx.decl_buffer((nb * (COL_TERMS * 8 + kh * kw * COLUMNS * 4),), "uint8",
                              name="WP")
    params[1] = packed
    layer = [int(v) for v in func.attrs[DEPTHWISE_ATTR]]
    call = tirx.call_extern("int32", DEPTHWISE_EXTERN, x.data, packed.data, bias.data,
                            mult.data, shift.data, qp.data, out.data, *layer)
    unpack = tirx.Evaluate(tirx.call_extern("int32", DEPTHWISE_UNPACK_EXTERN, packed.data,
                                            w.data, kh * kw, c))
    return _call_first(func, params, call, [unpack], [w]).with_attr(FAST_ATTR, 1)


def with_fast_path(func: Any, spec: Any = None) -> Any:
    """``func`` (a scheduled NPU kernel with :data:`LAYER_ATTR`; parameters ``X, W, BIAS,
    MUL, SH, QP, OUT``) taking its constants packed (:func:`pack_layer`): the fast call
    first; when it declines (sim mode) the weights are unpacked and the instruction stream
    runs as scheduled. With ``spec``, a conv with a window gather streams its input through a
    line buffer where it fits the input SRAM (:func:`_line_buffer`)."""
    from tvm import tirx

    params = list(func.params)  # buffers (TVM 0.27 parameters carry their buffer)
    x, w, bias, mult, shift, qp, out = params
    k, n = (int(d) for d in w.shape)
    nb, k4, _, _ = packed_shape(k, n)
    packed = tirx.decl_buffer((nb * (COL_TERMS * 8 + k4 * COLUMNS * DEPTH),), "uint8",
                              name="WP")
    params[1] = packed
    layer = [int(v) for v in func.attrs[LAYER_ATTR]]
    fast = tirx.call_extern("int32", LAYER_EXTERN, x.data, packed.data, bias.data, mult.data,
                            shift.data, qp.data, out.data, *layer)
    unpack = tirx.Evaluate(tirx.call_extern("int32", UNPACK_EXTERN, packed.data, w.data,
                                            k, n))
    begin, end = _line_buffer(func, spec, layer) if spec is not None else ([], [])
    return _call_first(func, params, fast, [unpack, *begin], [w], end).with_attr(FAST_ATTR, 1)


LINE_BUFFER_EXTERNS = ("lepton_line_buffer", "lepton_line_buffer_end")


def _line_buffer(func: Any, spec: Any, layer: list[int]) -> tuple[list[Any], list[Any]]:
    """The calls that stream a conv's input through a line buffer in sim mode (see
    ``lepton_line_buffer`` in ``csrc/lepton_npu.c``): when the kernel gathers windows into a
    ``cols`` buffer and the ring of input rows (the window's height plus one stride of rows)
    fits the input SRAM beside the plan's A strips. Otherwise none."""
    from tvm import tirx

    from lepton_compiler.target.npu_schedule import kernel_plan, sram_needs

    buffers = {b.name: b for b in func.body.block.alloc_buffers}
    cols = buffers.get("cols_pad", buffers.get("cols"))  # the A strips load from the padded
    if cols is None:                                     # copy when M is not whole tiles
        return [], []
    n, h, w, cin, _, kh, _, sh, _, dh, _, top, _, oh, _, _ = layer
    ring = (dh * (kh - 1) + sh) * w * cin
    if ring + sram_needs(kernel_plan(func, spec), spec)["input"] > spec.sram.input_bytes:
        return [], []
    nbytes = math.prod(int(d) for d in cols.shape)  # int8
    x = func.params[0]
    begin = tirx.Evaluate(tirx.call_extern(
        "int32", LINE_BUFFER_EXTERNS[0], x.data, cols.data, tirx.const(nbytes, "int64"), n, h,
        w, cin, kh, sh, dh, top, oh))
    end = tirx.Evaluate(tirx.call_extern("int32", LINE_BUFFER_EXTERNS[1], cols.data))
    return [begin], [end]


def add_fast_paths(mod: Any, kernels: set[str], spec: Any = None) -> Any:
    """Give every kernel in ``kernels`` with :data:`LAYER_ATTR` (NPU GEMM layers) or
    :data:`DEPTHWISE_ATTR` (host depthwise layers) whose weights and requantize terms are
    constants at all its call sites the whole-layer call (:func:`with_fast_path`,
    :func:`with_depthwise_call`), packing those constants at compile time."""
    from tvm import relax

    from lepton_compiler import tvm_compat

    main = mod["main"]
    sites: dict[str, list[Any]] = {}

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            name = expr.args[0].name_hint
            if name in kernels:
                sites.setdefault(name, []).append(expr.args[1].fields[1:5])

    def kind(name: str) -> str | None:
        attrs = mod[name].attrs
        for attr in (LAYER_ATTR, DEPTHWISE_ATTR):
            if attrs is not None and attr in attrs:
                return attr
        return None

    relax.analysis.post_order_visit(main.body, visit)
    chosen = {name: kind(name) for name, consts in sites.items()
              if kind(name) is not None
              and all(tvm_compat.is_tensor_constant(c) for site in consts for c in site)}
    if not chosen:
        return mod

    def pack(name: str, w: Any, bias: Any, mult: Any, shift: Any) -> np.ndarray:
        w, bias, mult, shift = (tvm_compat.constant_numpy(c) for c in (w, bias, mult, shift))
        if chosen[name] == DEPTHWISE_ATTR:
            return pack_depthwise(w, bias, mult, shift)
        return pack_layer(w, bias, mult, shift)

    @relax.expr_functor.mutator
    class Pack(relax.PyExprMutator):
        def visit_call_(self, op: Any) -> Any:
            call = self.visit_expr_post_order(op)
            if getattr(call.op, "name", "") != "relax.call_tir" or \
                    call.args[0].name_hint not in chosen:
                return call
            name = call.args[0].name_hint
            args = list(call.args[1].fields)
            args[1] = relax.const(pack(name, *args[1:5]))
            return self.builder_.normalize(relax.Call(
                call.op, [renamed[name], relax.Tuple(args), *call.args[2:]],
                call.attrs, call.ty_args))

    packer = Pack(mod)
    # New global vars: a call site is checked against its callee's signature as recorded in
    # the global var, which updating the function in place would leave stale.
    renamed = {name: packer.builder_.add_func(
        with_depthwise_call(mod[name]) if attr == DEPTHWISE_ATTR
        else with_fast_path(mod[name], spec), name) for name, attr in chosen.items()}
    packer.builder_.update_func(mod.get_global_var("main"), packer.visit_expr(main))
    return relax.transform.DeadCodeElimination()(packer.builder_.get())  # the old kernels
