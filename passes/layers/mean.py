"""mean over any axes in int8: int32 sum, then one rescale to the output's own quantization
(a mean's range is much narrower than its input's: a global average pool of a 7x7 map keeps
about a seventh of the spread, and the input's step would waste most of the 256 levels)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton_compiler.passes.layers.base import (
    EmitContext,
    Layer,
    LayerGraph,
    LayerKind,
    MatchContext,
    QParams,
    rescale_params,
)
from lepton_compiler.target import npu_constraints as rules


@dataclass(frozen=True)
class MeanParams:
    """``clamp(zo + round((sum - count * zi) * multiplier / 2**shift))``: the window sum
    rescaled by ``s_in / (count * s_out)`` with one rounding."""

    zi: int
    multiplier: int
    shift: int
    zo: int


class Mean(LayerKind):
    name = "mean"
    ops = ("relax.mean",)
    compute = True
    pattern = "mean over any axes"
    int8_kernel = "int32 sum, one rescale to the output's own scale"
    npu_rules = rules.VECTOR_RULES
    runs_on = "NPU vector unit over adjacent axes; host otherwise"

    def vector_work(self, layer: Layer, graph: LayerGraph, params: Any = None) -> Any:
        from lepton_compiler.target.npu_vector import VectorWork

        shape, axes = graph.shape(layer.inputs[0]), layer.attrs["axes"]
        if list(axes) != list(range(axes[0], axes[-1] + 1)):
            return None  # [outer, count, inner] needs adjacent axes
        p = params if params is not None else MeanParams(0, 0, 1, 0)
        return VectorWork.of("mean", outer=int(np.prod(shape[:axes[0]])),
                             count=layer.attrs["count"],
                             inner=int(np.prod(shape[axes[-1] + 1:])), zi=p.zi,
                             mult=p.multiplier, shift=p.shift, zo=p.zo)

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x, attrs = ctx.var_input(call.args[0]), call.attrs
        if x is None or attrs.axis is None:
            return None
        shape = ctx.shape(x)
        axes = tuple(sorted(int(a) % len(shape) for a in attrs.axis))
        return Layer("", self.name, [x], "", attrs={
            "axes": axes, "keepdims": bool(attrs.keepdims),
            "count": int(np.prod([shape[a] for a in axes]))})

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> MeanParams:
        count = layer.attrs["count"]
        return MeanParams(ins[0].zero_point,
                          *rescale_params(ins[0].scale / (count * out.scale)), out.zero_point)

    def reference(self, layer: Layer, p: MeanParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        return ref.mean(args[0], layer.attrs["axes"], layer.attrs["keepdims"], p.zi,
                        p.multiplier, p.shift, p.zo)

    def emit(self, ctx: EmitContext, layer: Layer, p: MeanParams, args: list[Any],
             on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        in_shape, out_shape = ctx.graph.shape(layer.inputs[0]), ctx.graph.shape(layer.output)
        func = qkernels.mean_func(in_shape, layer.attrs["axes"], layer.attrs["keepdims"],
                                  p.zi, p.multiplier, p.shift, p.zo)
        work = self.vector_work(layer, ctx.graph, p) if on_npu else None
        if work is not None:
            func = work.mark(func)
        return ctx.call(func, layer.name, args, out_shape, "int8")


KINDS = (Mean(),)
