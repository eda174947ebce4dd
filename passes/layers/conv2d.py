"""conv2d (NHWC activations, HWIO constant weights) with its bias add and ReLU/ReLU6:
im2col + int8 GEMM + requantize in one kernel; a 1x1 stride-1 conv is a plain GEMM;
grouped/depthwise convolutions run on the NPU's vector unit (``target/npu_vector.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler.passes.layers.base import (
    EmitContext,
    Layer,
    LayerGraph,
    LayerKind,
    MatchContext,
    QParams,
    const,
    ints,
    is_const,
    padding4,
)
from lepton_compiler.passes.layers.gemm import (
    GEMM_RULES,
    GemmParams,
    fused_gemm,
    gemm_params,
    unfused_gemm,
)
from lepton_compiler.target import npu_constraints as rules


class Conv2d(LayerKind):
    name = "conv2d"
    ops = ("relax.nn.conv2d",)
    compute = True
    absorbs_bias = True
    absorbs_act = True
    npu_rules = (GEMM_RULES[0], rules.conv_engine)
    pattern = "nn.conv2d (+ add bias) (+ relu or clip 0..6)"
    int8_kernel = ("im2col + int8 GEMM (int32 accumulators) + bias + requantize + clamp, "
                   "one kernel")
    runs_on = ("NPU: groups = 1 on the matrix engine (requantize on the vector unit); "
               "grouped/depthwise on the vector unit")

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x, attrs = ctx.var_input(call.args[0]), call.attrs
        if (x is None or not is_const(call.args[1])
                or str(attrs.data_layout) != "NHWC" or str(attrs.kernel_layout) != "HWIO"
                or str(attrs.out_layout) != "NHWC"):
            return None
        return Layer("", self.name, [x], "", weight=const(call.args[1]).astype(np.float64),
                     attrs={"strides": ints(attrs.strides), "padding": padding4(attrs.padding),
                            "dilation": ints(attrs.dilation), "groups": int(attrs.groups)})

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> GemmParams:
        return gemm_params(layer, ins[0], out, per_channel)

    def reference(self, layer: Layer, p: GemmParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        a = layer.attrs
        if a["groups"] != 1:
            return ref.grouped_conv2d(args[0], p.weight, a["groups"], p.bias, p.multiplier,
                                      p.shift, p.input_zero_point, p.zero_point, p.lo, p.hi,
                                      a["strides"], a["padding"], a["dilation"])
        return ref.conv2d(args[0], p.weight, p.bias, p.multiplier, p.shift, p.input_zero_point,
                          p.zero_point, p.lo, p.hi, a["strides"], a["padding"], a["dilation"])

    def shape(self, layer: Layer, graph: LayerGraph) -> Any:
        from lepton_compiler.target.npu_kernels import Conv2dShape

        n, h, w, cin = graph.shape(layer.inputs[0])
        kh, kw, _, cout = layer.weight.shape
        a = layer.attrs
        return Conv2dShape(n, h, w, cin, cout, kh, kw, a["strides"], a["padding"],
                           a["dilation"])

    def emit(self, ctx: EmitContext, layer: Layer, p: GemmParams, args: list[Any],
             on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        shape = self.shape(layer, ctx.graph)
        a, w = layer.attrs, p.weight
        kh, kw, cin, cout = shape.kh, shape.kw, shape.cin, shape.cout
        m, x = shape.gemm[0], args[0]
        pointwise = (kh, kw) == (1, 1) and a["strides"] == (1, 1) and \
            not any(a["padding"]) and a["groups"] == 1
        if a["groups"] != 1:  # grouped/depthwise: the vector unit, or a host kernel
            func = qkernels.grouped_conv2d_func(shape, a["groups"], p.input_zero_point)
            if on_npu:
                func = self.vector_work(layer, ctx.graph, p).mark(func)
        elif pointwise:  # a 1x1 conv is a matrix product over pixels: no window gather
            func = qkernels.dense_func(m, cin, cout)
            w, x = w.reshape(cin, cout), ctx.reshape(x, (m, cin))
        else:
            func = qkernels.conv2d_func(shape, p.input_zero_point)
            w = w.reshape(kh * kw * cin, cout)
        return fused_gemm(ctx, layer, func, x, w, p, m, cout, on_npu)

    def emit_unfused(self, ctx: EmitContext, layer: Layer, p: GemmParams, args: list[Any],
                     on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        if layer.attrs["groups"] != 1:
            return self.emit(ctx, layer, p, args, on_npu)
        shape = self.shape(layer, ctx.graph)
        m, _, k = shape.gemm
        x = ctx.call(qkernels.im2col_func(shape, p.input_zero_point), f"{layer.name}_im2col",
                     args, (m, k), "int8")
        return unfused_gemm(ctx, layer, p, x, p.weight.reshape(k, shape.cout), m, k,
                            shape.cout)

    def macs(self, layer: Layer, graph: LayerGraph) -> int:
        kh, kw, cin_g, _ = layer.weight.shape
        return int(np.prod(graph.shape(layer.output))) * kh * kw * cin_g

    def vector_work(self, layer: Layer, graph: LayerGraph, params: Any = None) -> Any:
        from lepton_compiler.target.npu_vector import VectorWork

        if layer.attrs["groups"] == 1:
            return None
        s = self.shape(layer, graph)
        oh, ow = s.out_hw
        return VectorWork.of(
            "conv", groups=layer.attrs["groups"], n=s.n, h=s.h, w=s.w, cin=s.cin, cout=s.cout,
            kh=s.kh, kw=s.kw, sh=s.stride[0], sw=s.stride[1], dh=s.dilation[0],
            dw=s.dilation[1], top=s.padding[0], left=s.padding[1], oh=oh, ow=ow,
            in_zp=params.input_zero_point if params is not None else 0)

    def gemm(self, layer: Layer, graph: LayerGraph) -> tuple[int, int, int]:
        kh, kw, cin_g, cout = layer.weight.shape
        return int(np.prod(graph.shape(layer.output)[:-1])), cout, kh * kw * cin_g


KINDS = (Conv2d(),)
