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

from typing import Any

import numpy as np

#: Kernel attribute: the layer's geometry for the fast call, set by ``qkernels``:
#: ``[n, h, w, cin, cout, kh, kw, sh, sw, dh, dw, top, left, oh, ow, input_zero_point]``
#: (a dense layer is ``n = M`` images of ``1 x 1 x K``).
LAYER_ATTR = "lepton.layer"
#: Kernel attribute: 1 once the kernel takes packed weights and has the fast path.
FAST_ATTR = "lepton.fast"
LAYER_EXTERN = "lepton_layer_i8"
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


def with_fast_path(func: Any) -> Any:
    """``func`` (a scheduled NPU kernel with :data:`LAYER_ATTR`; parameters ``X, W, BIAS,
    MUL, SH, QP, OUT``) taking packed weights: the fast call first; when it declines (sim
    mode) the weights are unpacked and the instruction stream runs as scheduled."""
    from tvm import s_tir, tirx

    params = list(func.params)  # buffers (TVM 0.27 parameters carry their buffer)
    x, w, bias, mult, shift, qp, out = params
    k, n = (int(d) for d in w.shape)
    packed = tirx.decl_buffer(packed_shape(k, n), "uint8", name="WP")
    params[1] = packed

    realize = func.body
    root = realize.block
    layer = [int(v) for v in func.attrs[LAYER_ATTR]]
    fast = tirx.call_extern("int32", LAYER_EXTERN, x.data, packed.data, bias.data, mult.data,
                            shift.data, qp.data, out.data, *layer)
    unpack = tirx.Evaluate(tirx.call_extern("int32", UNPACK_EXTERN, packed.data, w.data,
                                            k, n))
    stream = tirx.IfThenElse(fast != 1, tirx.SeqStmt([unpack, root.body]), None)
    root = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, stream,
                        root.init, [*root.alloc_buffers, w], root.match_buffers,
                        root.annotations)
    body = s_tir.SBlockRealize(realize.iter_values, realize.predicate, root)
    new = tirx.PrimFunc(params, body, func.ret_type, func.attrs)
    return new.with_attr(FAST_ATTR, 1)


def add_fast_paths(mod: Any, kernels: set[str]) -> Any:
    """Give every kernel in ``kernels`` that has :data:`LAYER_ATTR` and constant weights at
    all its call sites the fast path (:func:`with_fast_path`), packing those constants."""
    from tvm import relax

    from lepton_compiler import tvm_compat

    main = mod["main"]
    sites: dict[str, list[Any]] = {}

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            name = expr.args[0].name_hint
            if name in kernels:
                sites.setdefault(name, []).append(expr.args[1].fields[1])

    relax.analysis.post_order_visit(main.body, visit)
    chosen = {name for name, weights in sites.items()
              if mod[name].attrs is not None and LAYER_ATTR in mod[name].attrs
              and all(tvm_compat.is_tensor_constant(w) for w in weights)}
    if not chosen:
        return mod

    @relax.expr_functor.mutator
    class Pack(relax.PyExprMutator):
        def visit_call_(self, op: Any) -> Any:
            call = self.visit_expr_post_order(op)
            if getattr(call.op, "name", "") != "relax.call_tir" or \
                    call.args[0].name_hint not in chosen:
                return call
            args = list(call.args[1].fields)
            args[1] = relax.const(pack_weights(tvm_compat.constant_numpy(args[1])))
            return self.builder_.normalize(relax.Call(
                call.op, [renamed[call.args[0].name_hint], relax.Tuple(args), *call.args[2:]],
                call.attrs, call.ty_args))

    packer = Pack(mod)
    # New global vars: a call site is checked against its callee's signature as recorded in
    # the global var, which updating the function in place would leave stale.
    renamed = {name: packer.builder_.add_func(with_fast_path(mod[name]), name)
               for name in chosen}
    packer.builder_.update_func(mod.get_global_var("main"), packer.visit_expr(main))
    return relax.transform.DeadCodeElimination()(packer.builder_.get())  # the old kernels
