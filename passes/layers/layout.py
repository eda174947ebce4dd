"""Layout ops in int8: reshape, expand_dims, squeeze, an identity broadcast_to,
permute_dims, pad and strided_slice are exact data movement in the input's quantization (a
constant pad value is quantized like any value of the tensor, so zero pads with the zero
point); concat rescales each input whose quantization differs from its output's."""

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
    ints,
)
from lepton_compiler.target import npu_constraints as rules


class Reshape(LayerKind):
    name = "reshape"
    ops = ("relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.broadcast_to")
    follows = True
    npu_rules = (rules.int8_operands,)
    runs_on = "NPU (no kernel: a view of the same bytes)"
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
    npu_rules = rules.VECTOR_RULES
    runs_on = "NPU DMA engine (strided descriptors)"

    def vector_work(self, layer: Layer, graph: LayerGraph, params: Any = None) -> Any:
        from lepton_compiler.target.npu_vector import VectorWork

        return VectorWork.of("transpose", size=int(np.prod(graph.shape(layer.output))))
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

        if not on_npu:
            return ctx.bb.emit(relax.op.permute_dims(args[0], list(layer.attrs["axes"])))
        from lepton_compiler.target import qkernels

        in_shape, shape = ctx.graph.shape(layer.inputs[0]), ctx.graph.shape(layer.output)
        func = qkernels.transpose_func(in_shape, layer.attrs["axes"])
        return ctx.call(self.vector_work(layer, ctx.graph).mark(func), layer.name, args, shape,
                        "int8")


_PAD_MODES = {"constant": "constant", "edge": "edge", "reflect": "reflect"}


@dataclass(frozen=True)
class PadParams:
    """The int8 pad value: the pad constant quantized in the input's quantization."""

    value: int


class Pad(LayerKind):
    name = "pad"
    ops = ("relax.nn.pad",)
    follows = True
    pattern = "nn.pad (constant, edge or reflect)"
    int8_kernel = "int8 data movement; a constant pad is quantized (0 pads with the zero point)"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        x, attrs = ctx.var_input(call.args[0]), call.attrs
        mode = str(attrs.pad_mode)
        if x is None or mode not in _PAD_MODES:
            return None
        width = ints(attrs.pad_width)
        return Layer("", self.name, [x], "", attrs={
            "pad_width": tuple(zip(width[0::2], width[1::2], strict=True)), "mode": mode,
            "value": float(attrs.pad_value)})

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> PadParams:
        from lepton_compiler.target import reference as ref

        x = ins[0]
        return PadParams(int(ref.quantize(np.array([layer.attrs["value"]], np.float32),
                                          x.scale, x.zero_point)[0]))

    def reference(self, layer: Layer, p: PadParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        a = layer.attrs
        if a["mode"] == "constant":
            return np.pad(args[0], a["pad_width"], constant_values=p.value).astype(np.int8)
        return np.pad(args[0], a["pad_width"], mode=_PAD_MODES[a["mode"]]).astype(np.int8)

    def emit(self, ctx: EmitContext, layer: Layer, p: PadParams, args: list[Any],
             on_npu: bool) -> Any:
        from tvm import relax

        a = layer.attrs
        width = [int(v) for pair in a["pad_width"] for v in pair]
        return ctx.bb.emit(relax.op.nn.pad(args[0], width, a["mode"], float(p.value)))


class StridedSlice(LayerKind):
    name = "strided_slice"
    ops = ("relax.strided_slice",)
    follows = True
    pattern = "strided_slice with constant axes, begins, ends and strides"
    int8_kernel = "int8 data movement (exact)"

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        from tvm import relax

        x = ctx.var_input(call.args[0])
        if x is None or len(call.args) < 4:
            return None
        parts = []
        for arg in call.args[1:5]:
            if not isinstance(arg, relax.ShapeExpr) and not isinstance(arg, relax.Tuple):
                values = getattr(arg, "values", None)
                if values is None:
                    return None
            else:
                values = arg.values if isinstance(arg, relax.ShapeExpr) else arg.fields
            try:
                parts.append(tuple(int(getattr(v, "value", v)) for v in values))
            except (TypeError, ValueError):
                return None  # a run-time begin/end: stays float
        axes, begin, end = parts[:3]
        strides = parts[3] if len(parts) > 3 else (1,) * len(axes)
        return Layer("", self.name, [x], "", attrs={
            "axes": axes, "begin": begin, "end": end, "strides": strides})

    def reference(self, layer: Layer, params: None, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        a = layer.attrs
        index = [slice(None)] * args[0].ndim
        for axis, b, e, st in zip(a["axes"], a["begin"], a["end"], a["strides"], strict=True):
            index[axis] = slice(b, e, st)
        out = args[0][tuple(index)]
        if out.shape != tuple(out_shape):
            raise ValueError(f"{layer.name}: slice gives {out.shape}, expected {out_shape}")
        return out

    def emit(self, ctx: EmitContext, layer: Layer, params: None, args: list[Any],
             on_npu: bool) -> Any:
        from tvm import relax

        a = layer.attrs
        return ctx.bb.emit(relax.op.strided_slice(args[0], list(a["axes"]), list(a["begin"]),
                                                  list(a["end"]), list(a["strides"])))


@dataclass(frozen=True)
class ConcatParams:
    """Per input: ``None`` when it already has the output's quantization, else the
    rescale ``(zero point in, multiplier, shift)``; and the output zero point."""

    rescale: tuple[tuple[int, int, int] | None, ...]
    zero_point: int


class Concat(LayerKind):
    name = "concat"
    ops = ("relax.concat",)
    compute = True
    pattern = "concat of activations along one axis"
    int8_kernel = ("inputs in the output's quantization are copied, the others rescaled "
                   "(one rounding)")

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        from tvm import relax

        parts = call.args[0]
        if not isinstance(parts, relax.Tuple) or call.attrs.axis is None:
            return None
        names = [ctx.var_input(f) for f in parts.fields]
        if any(n is None for n in names):
            return None
        rank = len(ctx.shape(names[0]))
        return Layer("", self.name, list(names), "",
                     attrs={"axis": int(call.attrs.axis) % rank})

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> ConcatParams:
        from lepton_compiler.passes.layers.base import rescale_params

        return ConcatParams(tuple(None if q == out else (q.zero_point,
                                                         *rescale_params(q.scale / out.scale))
                                  for q in ins), out.zero_point)

    def reference(self, layer: Layer, p: ConcatParams, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        from lepton_compiler.target import reference as ref

        parts = [a if r is None else ref.rescale(a, *r, p.zero_point)
                 for a, r in zip(args, p.rescale, strict=True)]
        return np.concatenate(parts, axis=layer.attrs["axis"])

    def emit(self, ctx: EmitContext, layer: Layer, p: ConcatParams, args: list[Any],
             on_npu: bool) -> Any:
        from tvm import relax

        from lepton_compiler.target import qkernels

        parts = []
        for i, (arg, r, name) in enumerate(zip(args, p.rescale, layer.inputs, strict=True)):
            if r is not None:
                shape = ctx.graph.shape(name)
                arg = ctx.call(qkernels.rescale_func(shape, *r, p.zero_point),
                               f"{layer.name}_rescale{i}", [arg], shape, "int8")
            parts.append(arg)
        return ctx.bb.emit(relax.op.concat(parts, layer.attrs["axis"]))


KINDS = (Reshape(), PermuteDims(), Pad(), StridedSlice(), Concat())
