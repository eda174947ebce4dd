"""Multiplying or dividing an int8 tensor by a positive scalar constant (attention's
``1/sqrt(d)``): the integers stay as they are and only the scale changes, so the layer has no
kernel at all."""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler.passes.layers.base import (
    EmitContext,
    Layer,
    LayerKind,
    MatchContext,
    QParams,
    const,
    is_const,
)
from lepton_compiler.target import npu_constraints as rules


class Scale(LayerKind):
    name = "scale"
    ops = ("relax.multiply", "relax.divide")
    priority = 200  # after the kinds that fuse a multiply
    follows = True
    npu_rules = (rules.int8_operands,)
    pattern = "multiply or divide by a positive scalar constant"
    int8_kernel = "none: the output's scale is the input's times the constant"
    runs_on = "NPU (no kernel: a change of scale)"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x = ctx.var_input(call.args[0])
        if x is None or not is_const(call.args[1]):
            return None
        c = const(call.args[1])
        if c.size != 1 or c.dtype.kind != "f":
            return None
        value = float(c.reshape(()))
        if not np.isfinite(value) or value <= 0 or \
                tuple(np.broadcast_shapes(ctx.shape(x), c.shape)) != ctx.shape(x):
            return None
        factor = value if op == "relax.multiply" else 1.0 / value
        return Layer("", self.name, [x], "", attrs={"factor": factor})

    def output_qparams(self, layer: Layer, ins: list[QParams],
                       ranges: dict[str, tuple[float, float]]) -> QParams | None:
        scale, factor = ins[0].scale, layer.attrs["factor"]
        scaled = tuple(s * factor for s in scale) if isinstance(scale, tuple) else \
            scale * factor
        return QParams(scaled, ins[0].zero_point)

    def reference(self, layer: Layer, params: None, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        return args[0]

    def emit(self, ctx: EmitContext, layer: Layer, params: None, args: list[Any],
             on_npu: bool) -> Any:
        return args[0]


KINDS = (Scale(),)
