"""Residual add of two same-shape activations (+ ReLU): both inputs rescaled to the output
scale with one rounding, then the clamp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton_compiler.errors import QuantizationError
from lepton_compiler.passes.layers.base import (
    EmitContext,
    Layer,
    LayerGraph,
    LayerKind,
    MatchContext,
    QParams,
    clamp_bounds,
)
from lepton_compiler.target import npu_constraints as rules


@dataclass(frozen=True)
class AddParams:
    """``clamp(zo + round((ma (a - za) + mb (b - zb)) / 2**shift), lo, hi)``."""

    za: int
    ma: int
    zb: int
    mb: int
    shift: int
    zo: int
    lo: int
    hi: int


class Add(LayerKind):
    name = "add"
    ops = ("relax.add",)
    compute = True
    absorbs_act = True
    pattern = "add of two same-shape activations (+ relu)"
    int8_kernel = "both inputs rescaled to the output scale, one rounding, clamp"
    npu_rules = rules.VECTOR_RULES
    runs_on = "NPU vector unit"

    def vector_work(self, layer: Layer, graph: LayerGraph, params: Any = None) -> Any:
        from lepton_compiler.target.npu_vector import VectorWork

        p = params if params is not None else AddParams(0, 0, 0, 0, 1, 0, -128, 127)
        return VectorWork.of("add", size=int(np.prod(graph.shape(layer.output))), za=p.za,
                             ma=p.ma, zb=p.zb, mb=p.mb, shift=p.shift, zo=p.zo, lo=p.lo,
                             hi=p.hi)

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        a, b = ctx.var_input(call.args[0]), ctx.var_input(call.args[1])
        if a is None or b is None or ctx.shape(a) != ctx.shape(b):
            return None
        return Layer("", self.name, [a, b], "")

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> AddParams:
        a, b = ins
        ra, rb = a.scale / out.scale, b.scale / out.scale
        exponent = int(np.frexp(max(ra, rb))[1])
        if 30 - exponent < 1:
            raise QuantizationError(f"{layer.name}: input/output scale ratio {max(ra, rb):g} "
                                    "is too large")
        shift = int(np.clip(30 - exponent, 1, 62))
        return AddParams(a.zero_point, round(ra * 2**shift), b.zero_point,
                         round(rb * 2**shift), shift, out.zero_point,
                         *clamp_bounds(layer.act, out))

    def reference(self, layer: Layer, p: AddParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        return ref.add(args[0], args[1], p.za, p.ma, p.zb, p.mb, p.shift, p.zo, p.lo, p.hi)

    def emit(self, ctx: EmitContext, layer: Layer, p: AddParams, args: list[Any],
             on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        shape = ctx.graph.shape(layer.output)
        func = qkernels.add_func(shape, p.za, p.ma, p.zb, p.mb, p.shift, p.zo, p.lo, p.hi)
        if on_npu:
            func = self.vector_work(layer, ctx.graph, p).mark(func)
        return ctx.call(func, layer.name, args, shape, "int8")

    def emit_unfused(self, ctx: EmitContext, layer: Layer, p: AddParams, args: list[Any],
                     on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        if layer.act is None:
            return self.emit(ctx, layer, p, args, on_npu)
        shape = ctx.graph.shape(layer.output)
        func = qkernels.add_func(shape, p.za, p.ma, p.zb, p.mb, p.shift, p.zo, -128, 127)
        y = ctx.call(func, f"{layer.name}_add", args, shape, "int8")
        return ctx.call(qkernels.clamp_func(shape, p.lo, p.hi), f"{layer.name}_act", [y],
                        shape, "int8")


KINDS = (Add(),)
