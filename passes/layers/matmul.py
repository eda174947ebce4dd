"""matmul of two activations with equal batch dimensions (attention's Q·Kᵀ and P·V), with a
ReLU: a batched int8 GEMM, zero points through row/column sums, requantize + clamp."""

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
    clamp_bounds,
    fixed_point,
)
from lepton_compiler.passes.layers.gemm import GEMM_RULES


@dataclass(frozen=True)
class MatmulParams:
    """Zero points of both operands and one requantization of the product."""

    za: int
    zb: int
    multiplier: int
    shift: int
    zero_point: int
    lo: int
    hi: int


class Matmul(LayerKind):
    name = "matmul"
    ops = ("relax.matmul",)
    priority = 1
    compute = True
    absorbs_act = True
    npu_rules = GEMM_RULES
    pattern = "matmul of two activations with equal batch dimensions (+ relu)"
    int8_kernel = ("batched int8 GEMM; zero points through row/column sums; requantize + "
                   "clamp")
    runs_on = "NPU"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x, y = ctx.var_input(call.args[0]), ctx.var_input(call.args[1])
        if x is None or y is None:
            return None
        a, b = ctx.shape(x), ctx.shape(y)
        if len(a) < 2 or len(a) != len(b) or a[:-2] != b[:-2] or a[-1] != b[-2]:
            return None  # broadcast batches stay float
        return Layer("", self.name, [x, y], "")

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> MatmulParams:
        a, b = ins
        multiplier, shift = fixed_point(a.scale * b.scale / out.scale)
        return MatmulParams(a.zero_point, b.zero_point, multiplier, shift, out.zero_point,
                            *clamp_bounds(layer.act, out))

    def reference(self, layer: Layer, p: MatmulParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        return ref.matmul(args[0], args[1], p.za, p.zb, p.multiplier, p.shift, p.zero_point,
                          p.lo, p.hi)

    def emit(self, ctx: EmitContext, layer: Layer, p: MatmulParams, args: list[Any],
             on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        a_shape, b_shape = (ctx.graph.shape(t) for t in layer.inputs)
        batch = int(np.prod(a_shape[:-2]))
        m, k, n = a_shape[-2], a_shape[-1], b_shape[-1]
        func = qkernels.batch_matmul_func(batch, m, k, n, p.za, p.zb, p.multiplier, p.shift,
                                          p.zero_point, p.lo, p.hi)
        if not on_npu:
            func = func.with_attr(qkernels.GEMM_ATTR, "")
        operands = [ctx.reshape(args[0], (batch, m, k)), ctx.reshape(args[1], (batch, k, n))]
        out = ctx.call(func, layer.name, operands, (batch, m, n), "int8")
        return ctx.reshape(out, ctx.graph.shape(layer.output))

    def macs(self, layer: Layer, graph: LayerGraph) -> int:
        return int(np.prod(graph.shape(layer.output))) * graph.shape(layer.inputs[0])[-1]

    def gemm(self, layer: Layer, graph: LayerGraph) -> tuple[int, int, int]:
        a = graph.shape(layer.inputs[0])
        return a[-2], graph.shape(layer.output)[-1], a[-1]


KINDS = (Matmul(),)
