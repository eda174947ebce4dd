"""Softmax over the last axis in int8 (I-BERT style, integers only): the exponentials of
``x - max(x)`` from a 256-entry table (the input's scale is known, so ``exp(scale * d)`` for
the 256 possible differences ``d`` is one table), their int32 sum, one reciprocal per row,
and the probabilities requantized to the fixed int8 output quantization (scale 1/256, zero
point -128). See ``reference.softmax`` for the exact integer semantics."""

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
)
from lepton_compiler.target import npu_constraints as rules


@dataclass(frozen=True)
class SoftmaxParams:
    """``exp_table[d + 255] = round(exp(scale * d) * 2^15)`` for ``d`` in [-255, 0]."""

    exp_table: np.ndarray


def exp_table(scale: float) -> np.ndarray:
    d = np.arange(-255, 1, dtype=np.float64)
    return np.round(np.exp(float(scale) * d) * 2.0 ** 15).astype(np.int32)


class Softmax(LayerKind):
    name = "softmax"
    ops = ("relax.nn.softmax",)
    npu_rules = rules.VECTOR_RULES
    pattern = "nn.softmax over the last axis"
    int8_kernel = ("table exp of x - max, int32 sum, one reciprocal per row; output scale "
                   "1/256, zero point -128")
    runs_on = "NPU vector unit (max, lut, add, div, mul, shift)"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x = ctx.var_input(call.args[0])
        if x is None:
            return None
        rank = len(ctx.shape(x))
        if int(call.attrs.axis) % rank != rank - 1:
            return None
        return Layer("", self.name, [x], "")

    def output_qparams(self, layer: Layer, ins: list[QParams],
                       ranges: dict[str, tuple[float, float]]) -> QParams | None:
        from lepton_compiler.target.reference import SOFTMAX_SCALE, SOFTMAX_ZERO_POINT

        return QParams(SOFTMAX_SCALE, SOFTMAX_ZERO_POINT)

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> SoftmaxParams:
        return SoftmaxParams(exp_table(float(np.max(ins[0].scale))))

    def reference(self, layer: Layer, p: SoftmaxParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        return ref.softmax(args[0], p.exp_table)

    def vector_work(self, layer: Layer, graph: LayerGraph, params: Any = None) -> Any:
        from lepton_compiler.target.npu_vector import VectorWork
        from lepton_compiler.target.reference import SOFTMAX_RECIP_BITS

        shape = graph.shape(layer.output)
        return VectorWork.of("softmax", rows=int(np.prod(shape[:-1])), len=shape[-1],
                             recip_bits=SOFTMAX_RECIP_BITS)

    def emit(self, ctx: EmitContext, layer: Layer, p: SoftmaxParams, args: list[Any],
             on_npu: bool) -> Any:
        from tvm import relax

        from lepton_compiler.target.npu_vector import extern_kernel

        shape = tuple(ctx.graph.shape(layer.output))
        func = extern_kernel(self.vector_work(layer, ctx.graph),
                             [("X", shape, "int8"), ("T", (256,), "int32"),
                              ("OUT", shape, "int8")])
        return ctx.call(func, layer.name, [args[0], relax.const(p.exp_table)], shape, "int8")


KINDS = (Softmax(),)
