"""mean over any axes in int8: int32 sum, rounded division, in the input's quantization."""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler.passes.layers.base import EmitContext, Layer, LayerKind, MatchContext


class Mean(LayerKind):
    name = "mean"
    ops = ("relax.mean",)
    follows = True
    pattern = "mean over any axes"
    int8_kernel = "int32 sum, rounded division"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x, attrs = ctx.var_input(call.args[0]), call.attrs
        if x is None or attrs.axis is None:
            return None
        rank = len(ctx.shape(x))
        return Layer("", self.name, [x], "", attrs={
            "axes": tuple(sorted(int(a) % rank for a in attrs.axis)),
            "keepdims": bool(attrs.keepdims)})

    def reference(self, layer: Layer, params: None, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        return ref.mean(args[0], layer.attrs["axes"], layer.attrs["keepdims"])

    def emit(self, ctx: EmitContext, layer: Layer, params: None, args: list[Any],
             on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        in_shape, out_shape = ctx.graph.shape(layer.inputs[0]), ctx.graph.shape(layer.output)
        func = qkernels.mean_func(in_shape, layer.attrs["axes"], layer.attrs["keepdims"])
        return ctx.call(func, layer.name, args, out_shape, "int8")


KINDS = (Mean(),)
