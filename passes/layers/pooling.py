"""Pooling in int8: max pooling (exact) and average pooling (int32 window sum, rounded
division), both in the input's quantization."""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler.passes.layers.base import (
    EmitContext,
    Layer,
    LayerGraph,
    LayerKind,
    MatchContext,
    ints,
    padding4,
)
from lepton_compiler.target import npu_constraints as rules


class MaxPool2d(LayerKind):
    name = "max_pool2d"
    ops = ("relax.nn.max_pool2d",)
    follows = True
    pattern = "nn.max_pool2d (NHWC, no dilation)"
    int8_kernel = "int8 max (exact)"
    npu_rules = rules.VECTOR_RULES
    runs_on = "NPU vector unit"

    def vector_work(self, layer: Layer, graph: LayerGraph, params: Any = None) -> Any:
        from lepton_compiler.target.npu_vector import VectorWork

        a = layer.attrs
        n, h, w, c = graph.shape(layer.inputs[0])
        oh, ow = graph.shape(layer.output)[1:3]
        return VectorWork.of("maxpool", n=n, h=h, w=w, c=c, ph=a["pool_size"][0],
                             pw=a["pool_size"][1], sh=a["strides"][0], sw=a["strides"][1],
                             top=a["padding"][0], left=a["padding"][1], oh=oh, ow=ow)

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x, attrs = ctx.var_input(call.args[0]), call.attrs
        if x is None or str(attrs.layout) != "NHWC" or bool(attrs.ceil_mode) or any(
                int(d) != 1 for d in attrs.dilation):
            return None
        return Layer("", self.name, [x], "", attrs={
            "pool_size": ints(attrs.pool_size), "strides": ints(attrs.strides),
            "padding": padding4(attrs.padding)})

    def reference(self, layer: Layer, params: None, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        a = layer.attrs
        return ref.max_pool2d(args[0], a["pool_size"], a["strides"], a["padding"])

    def emit(self, ctx: EmitContext, layer: Layer, params: None, args: list[Any],
             on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        a, out_shape = layer.attrs, ctx.graph.shape(layer.output)
        nb, h, w, c = ctx.graph.shape(layer.inputs[0])
        func = qkernels.max_pool2d_func(nb, h, w, c, a["pool_size"], a["strides"],
                                        a["padding"], out_shape[1:3])
        if on_npu:
            func = self.vector_work(layer, ctx.graph).mark(func)
        return ctx.call(func, layer.name, args, out_shape, "int8")


class AvgPool2d(LayerKind):
    name = "avg_pool2d"
    ops = ("relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d")
    follows = True
    pattern = "nn.avg_pool2d (no padding) or nn.adaptive_avg_pool2d to 1x1"
    int8_kernel = "int32 window sum, rounded division"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x, attrs = ctx.var_input(call.args[0]), call.attrs
        if x is None or str(attrs.layout) != "NHWC":
            return None
        _, h, w, _ = ctx.shape(x)
        if op == "relax.nn.adaptive_avg_pool2d":
            size = ints(attrs.output_size) if attrs.output_size is not None else (h, w)
            if size not in ((1, 1), (1,)):
                return None
            pool, strides = (h, w), (1, 1)
        else:
            if (any(ints(attrs.padding)) or bool(attrs.ceil_mode)
                    or any(int(d) != 1 for d in attrs.dilation)):
                return None
            pool, strides = ints(attrs.pool_size), ints(attrs.strides)
        return Layer("", self.name, [x], "", attrs={"pool_size": pool, "strides": strides})

    def reference(self, layer: Layer, params: None, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        out = ref.avg_pool2d(args[0], layer.attrs["pool_size"], layer.attrs["strides"])
        return out.reshape(out_shape)  # a spatial mean without keepdims drops H, W

    def emit(self, ctx: EmitContext, layer: Layer, params: None, args: list[Any],
             on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        a, out_shape = layer.attrs, ctx.graph.shape(layer.output)
        nb, h, w, c = ctx.graph.shape(layer.inputs[0])
        (ph, pw), (sh, sw) = a["pool_size"], a["strides"]
        pooled = (nb, (h - ph) // sh + 1, (w - pw) // sw + 1, c)
        func = qkernels.avg_pool2d_func(nb, h, w, c, a["pool_size"], a["strides"], pooled[1:3])
        out = ctx.call(func, layer.name, args, pooled, "int8")
        return out if tuple(out_shape) == pooled else ctx.reshape(out, out_shape)


KINDS = (MaxPool2d(), AvgPool2d())
