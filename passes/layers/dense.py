"""dense: matmul of an activation with a constant 2-D weight (or one broadcast over the batch)
with its bias add and ReLU/ReLU6: int8 GEMM + requantize in one kernel."""

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
    is_const,
)
from lepton_compiler.passes.layers.gemm import (
    GEMM_RULES,
    GemmParams,
    fused_gemm,
    gemm_params,
    unfused_gemm,
)


class Dense(LayerKind):
    name = "dense"
    ops = ("relax.matmul",)
    priority = 0  # before the activation x activation matmul
    compute = True
    absorbs_bias = True
    absorbs_act = True
    npu_rules = GEMM_RULES
    pattern = ("matmul with a constant 2-D weight, or one broadcast over the batch "
               "(+ add bias) (+ relu or clip 0..6)")
    int8_kernel = "int8 GEMM + bias + requantize + clamp, one kernel"
    runs_on = "NPU"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x = ctx.var_input(call.args[0])
        if x is None or not is_const(call.args[1]):
            return None
        w = const(call.args[1])
        if w.ndim == 2:
            return Layer("", self.name, [x], "", weight=w.astype(np.float64))
        flat = w.reshape(-1, *w.shape[-2:])  # a weight broadcast over the batch
        if all(np.array_equal(flat[0], f) for f in flat[1:]):
            return Layer("", self.name, [x], "", weight=flat[0].astype(np.float64))
        return None

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> GemmParams:
        return gemm_params(layer, ins[0], out, per_channel)

    def reference(self, layer: Layer, p: GemmParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        flat = args[0].reshape(-1, args[0].shape[-1])
        out = ref.dense(flat, p.weight, p.bias, p.multiplier, p.shift, p.zero_point, p.lo, p.hi)
        return out.reshape(out_shape)

    def _operand(self, ctx: EmitContext, layer: Layer, x: Any) -> tuple[Any, int, int, int]:
        in_shape = ctx.graph.shape(layer.inputs[0])
        k, cout = layer.weight.shape
        m = int(np.prod(in_shape[:-1]))
        return (x if len(in_shape) == 2 else ctx.reshape(x, (m, k))), m, k, cout

    def emit(self, ctx: EmitContext, layer: Layer, p: GemmParams, args: list[Any],
             on_npu: bool) -> Any:
        from lepton_compiler.target import qkernels

        x, m, k, cout = self._operand(ctx, layer, args[0])
        return fused_gemm(ctx, layer, qkernels.dense_func(m, k, cout), x, p.weight, p, m,
                          cout, on_npu)

    def emit_unfused(self, ctx: EmitContext, layer: Layer, p: GemmParams, args: list[Any],
                     on_npu: bool) -> Any:
        x, m, k, cout = self._operand(ctx, layer, args[0])
        return unfused_gemm(ctx, layer, p, x, p.weight, m, k, cout)

    def macs(self, layer: Layer, graph: LayerGraph) -> int:
        return int(np.prod(graph.shape(layer.output))) * layer.weight.shape[0]

    def gemm(self, layer: Layer, graph: LayerGraph) -> tuple[int, int, int]:
        k, n = layer.weight.shape
        return int(np.prod(graph.shape(layer.output)[:-1])), n, k


KINDS = (Dense(),)
