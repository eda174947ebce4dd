"""ReLU and clip (lo <= 0 <= hi) not fused into a GEMM: an int8 clamp in the input's
quantization."""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler.passes.layers.base import (
    ClampParams,
    EmitContext,
    Layer,
    LayerGraph,
    LayerKind,
    MatchContext,
    QParams,
    prim,
)
from lepton_compiler.target import npu_constraints as rules


class _Clamp(LayerKind):
    follows = True
    int8_kernel = "int8 clamp in the input's quantization"
    npu_rules = rules.VECTOR_RULES
    runs_on = "NPU vector unit (max, min)"

    def vector_work(self, layer: Layer, graph: LayerGraph, params: Any = None) -> Any:
        from lepton_compiler.target.npu_vector import VectorWork

        return VectorWork.of("clamp", size=int(np.prod(graph.shape(layer.output))),
                             lo=params.lo if params is not None else -128,
                             hi=params.hi if params is not None else 127)

    def reference(self, layer: Layer, p: ClampParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        return ref.clamp(args[0], p.lo, p.hi)

    def emit(self, ctx: EmitContext, layer: Layer, p: ClampParams, args: list[Any],
             on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        shape = ctx.graph.shape(layer.output)
        func = qkernels.clamp_func(shape, p.lo, p.hi)
        if on_npu:
            func = self.vector_work(layer, ctx.graph, p).mark(func)
        return ctx.call(func, layer.name, args, shape, "int8")


class Relu(_Clamp):
    name = "relu"
    ops = ("relax.nn.relu",)
    pattern = "nn.relu not fused into a GEMM"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x = ctx.var_input(call.args[0])
        return Layer("", self.name, [x], "") if x is not None else None

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> ClampParams:
        return ClampParams(ins[0].zero_point, 127)


class Clip(_Clamp):
    name = "clip"
    ops = ("relax.clip",)
    pattern = "clip(lo <= 0 <= hi) not fused into a GEMM"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x = ctx.var_input(call.args[0])
        lo, hi = (prim(a) for a in call.args[1:3])
        if x is None or lo is None or hi is None or not lo <= 0.0 <= hi:
            return None
        return Layer("", self.name, [x], "", attrs={"min": lo, "max": hi})

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> ClampParams:
        x = ins[0]
        lo = max(-128, x.zero_point + int(np.ceil(layer.attrs["min"] / x.scale - 0.5)))
        hi = min(127, x.zero_point + int(np.floor(layer.attrs["max"] / x.scale + 0.5)))
        return ClampParams(lo, max(lo, hi))


KINDS = (Relu(), Clip())
