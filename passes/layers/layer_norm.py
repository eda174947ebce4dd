"""Layer norm over the last axis in int8 (integers only): per row the sum and sum of squares,
an integer square root and one reciprocal, the normalized values in fixed point, then
gamma and beta folded into per-channel integer gains and offsets into the output's
calibrated quantization. See ``reference.layer_norm`` for the exact integer semantics."""

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
    const,
    ints,
    is_const,
)
from lepton_compiler.target import npu_constraints as rules


@dataclass(frozen=True)
class LayerNormParams:
    """See ``reference.layer_norm``: ``eps_term``, per-channel int32 ``gain`` and int64
    ``offset``, and the final ``shift``."""

    eps_term: int
    gain: np.ndarray
    offset: np.ndarray
    shift: int


class LayerNorm(LayerKind):
    name = "layer_norm"
    ops = ("relax.nn.layer_norm",)
    compute = True
    npu_rules = rules.VECTOR_RULES
    pattern = "nn.layer_norm over the last axis (constant gamma and beta)"
    int8_kernel = ("int32 sums, integer square root and reciprocal per row, per-channel "
                   "gain and offset")
    runs_on = "NPU vector unit (add, mul_add, div, mul, shift)"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x = ctx.var_input(call.args[0])
        if x is None or not (is_const(call.args[1]) and is_const(call.args[2])):
            return None
        rank = len(ctx.shape(x))
        if [a % rank for a in ints(call.attrs.axes)] != [rank - 1]:
            return None
        h = ctx.shape(x)[-1]
        gamma, beta = const(call.args[1]), const(call.args[2])
        if gamma.shape != (h,) or beta.shape != (h,):
            return None
        return Layer("", self.name, [x], "", attrs={
            "gamma": gamma.astype(np.float64), "beta": beta.astype(np.float64),
            "epsilon": float(call.attrs.epsilon)})

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> LayerNormParams:
        x = ins[0]
        if x.per_channel or out.per_channel:
            raise QuantizationError(f"{layer.name}: layer norm needs one input and one output "
                                    "scale")
        a = layer.attrs
        h = len(a["gamma"])
        eps_term = max(1, min(2**62, round(h * h * a["epsilon"] / float(x.scale) ** 2)))
        gain_real = a["gamma"] / float(out.scale)  # per unit of the Q16 normalized value
        peak = float(np.max(np.abs(gain_real))) or 1.0
        shift = int(np.clip(16 + 30 - np.ceil(np.log2(peak)), 17, 60))
        if not np.all(np.isfinite(a["beta"])) or not np.all(np.isfinite(gain_real)):
            raise QuantizationError(f"{layer.name}: gamma or beta holds NaN or Inf")
        gain = np.round(gain_real * 2.0 ** (shift - 16)).astype(np.int64)
        offset = np.round((a["beta"] / float(out.scale) + out.zero_point) * 2.0 ** shift)
        if np.abs(offset).max(initial=0) >= 2.0 ** 62:
            raise QuantizationError(f"{layer.name}: beta / output scale is too large for the "
                                    "integer offset")
        return LayerNormParams(int(eps_term), gain.astype(np.int32), offset.astype(np.int64),
                               shift)

    def reference(self, layer: Layer, p: LayerNormParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        return ref.layer_norm(args[0], p.eps_term, p.gain, p.offset, p.shift)

    def vector_work(self, layer: Layer, graph: LayerGraph, params: Any = None) -> Any:
        from lepton_compiler.target.npu_vector import VectorWork

        shape = graph.shape(layer.output)
        return VectorWork.of("layernorm", rows=int(np.prod(shape[:-1])), h=shape[-1],
                             eps_term=params.eps_term if params is not None else 1,
                             shift=params.shift if params is not None else 17)

    def emit(self, ctx: EmitContext, layer: Layer, p: LayerNormParams, args: list[Any],
             on_npu: bool) -> Any:
        from tvm import relax

        from lepton_compiler.target.npu_vector import extern_kernel

        shape = tuple(ctx.graph.shape(layer.output))
        h = shape[-1]
        func = extern_kernel(self.vector_work(layer, ctx.graph, p),
                             [("X", shape, "int8"), ("GAIN", (h,), "int32"),
                              ("OFFSET", (h,), "int64"), ("OUT", shape, "int8")])
        return ctx.call(func, layer.name, [args[0], relax.const(p.gain),
                                           relax.const(p.offset, "int64")],
                        shape, "int8")


KINDS = (LayerNorm(),)
