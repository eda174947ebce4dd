"""Elementwise functions of one int8 tensor — GELU (erf and tanh forms), sigmoid, tanh, SiLU —
as a 256-entry table: an int8 input has 256 values, so the table holds the function's exact
int8 answer for each (the float function of the dequantized value, quantized to the output's
calibrated range). One ``lut`` op per vector on the NPU's vector unit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

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


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


#: Relax op -> the float function its table holds.
FUNCTIONS: dict[str, Any] = {
    "relax.nn.gelu": _gelu, "relax.nn.gelu_tanh": _gelu_tanh, "relax.sigmoid": _sigmoid,
    "relax.tanh": np.tanh, "relax.nn.silu": lambda x: x * _sigmoid(x),
}


@dataclass(frozen=True)
class LutParams:
    """``table[q + 128]`` is the int8 output for input ``q`` (int32 entries)."""

    table: np.ndarray


def make_table(function: Any, x: QParams, out: QParams) -> np.ndarray:
    """The int8 answer of ``function`` for every int8 input, in ``out``'s quantization."""
    q = np.arange(-128, 128, dtype=np.float64)
    y = function(float(x.scale) * (q - x.zero_point))
    return np.clip(np.floor(y / float(out.scale) + 0.5) + out.zero_point, -128, 127
                   ).astype(np.int32)


class Lut(LayerKind):
    name = "lut"
    ops: ClassVar[tuple[str, ...]] = tuple(FUNCTIONS)
    compute = True
    npu_rules = rules.VECTOR_RULES
    pattern = ("nn.gelu (also its erf formula, see passes/canonical_gelu.py), nn.gelu_tanh, "
               "sigmoid, tanh, nn.silu")
    int8_kernel = "256-entry table of the function's int8 answers (exact by construction)"
    runs_on = "NPU vector unit (lut)"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x = ctx.var_input(call.args[0])
        return Layer("", self.name, [x], "", attrs={"function": op}) if x is not None else None

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> LutParams:
        return LutParams(make_table(FUNCTIONS[layer.attrs["function"]], ins[0], out))

    def reference(self, layer: Layer, p: LutParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        return ref.lut(args[0], p.table)

    def vector_work(self, layer: Layer, graph: LayerGraph, params: Any = None) -> Any:
        from lepton_compiler.target.npu_vector import VectorWork

        return VectorWork.of("lut", size=int(np.prod(graph.shape(layer.output))))

    def emit(self, ctx: EmitContext, layer: Layer, p: LutParams, args: list[Any],
             on_npu: bool) -> Any:
        from tvm import relax

        from lepton_compiler.target import qkernels

        shape = ctx.graph.shape(layer.output)
        func = qkernels.lut_func(shape)
        if on_npu:
            func = self.vector_work(layer, ctx.graph).mark(func)
        return ctx.call(func, layer.name, [args[0], relax.const(p.table)], shape, "int8")


KINDS = (Lut(),)
