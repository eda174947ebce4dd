"""Layout ops in int8 (exact data movement): reshape, expand_dims, squeeze, an identity
broadcast_to, and permute_dims."""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler.passes.layers.base import EmitContext, Layer, LayerKind, MatchContext, ints


class Reshape(LayerKind):
    name = "reshape"
    ops = ("relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.broadcast_to")
    follows = True
    pattern = "reshape, expand_dims, squeeze, identity broadcast_to"
    int8_kernel = "int8 data movement (exact)"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x = ctx.var_input(call.args[0])
        if x is None:
            return None
        if op == "relax.broadcast_to":  # a broadcast to the same shape is the identity
            if tuple(int(d) for d in call.args[1].values) != ctx.shape(x):
                return None
        return Layer("", self.name, [x], "")

    def reference(self, layer: Layer, params: None, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        return args[0].reshape(out_shape)

    def emit(self, ctx: EmitContext, layer: Layer, params: None, args: list[Any],
             on_npu: bool) -> Any:
        return ctx.reshape(args[0], ctx.graph.shape(layer.output))


class PermuteDims(LayerKind):
    name = "permute_dims"
    ops = ("relax.permute_dims",)
    follows = True
    pattern = "permute_dims"
    int8_kernel = "int8 data movement (exact)"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x = ctx.var_input(call.args[0])
        if x is None:
            return None
        axes = call.attrs.axes
        rank = len(ctx.shape(x))
        return Layer("", self.name, [x], "", attrs={
            "axes": ints(axes) if axes is not None else tuple(reversed(range(rank)))})

    def reference(self, layer: Layer, params: None, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        return np.transpose(args[0], layer.attrs["axes"])

    def emit(self, ctx: EmitContext, layer: Layer, params: None, args: list[Any],
             on_npu: bool) -> Any:
        from tvm import relax

        return ctx.bb.emit(relax.op.permute_dims(args[0], list(layer.attrs["axes"])))


KINDS = (Reshape(), PermuteDims())
