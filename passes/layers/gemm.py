"""What the GEMM kinds (conv2d, dense) share: per-channel parameters, the fused epilogue
operands and the unfused chain (gather, product, bias add, requantize, activation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton_compiler.errors import QuantizationError
from lepton_compiler.passes.layers.base import (
    EmitContext,
    Layer,
    QParams,
    bias_safe_scale,
    clamp_bounds,
    fixed_point,
    quantize_weights,
)
from lepton_compiler.target import npu_constraints as rules


@dataclass(frozen=True)
class GemmParams:
    """Integer parameters of a conv2d or dense layer: int8 weights (symmetric per output
    channel), int32 bias with the input zero point folded in, per-channel requantization."""

    weight: np.ndarray         # int8, conv2d HWIO / dense [K, N]
    weight_scale: np.ndarray   # float64 per output channel
    bias: np.ndarray           # int32 per output channel
    multiplier: np.ndarray     # int32 per output channel
    shift: np.ndarray          # int32 per output channel
    input_zero_point: int
    zero_point: int
    lo: int
    hi: int


#: The offload rules of a matrix product (conv2d adds its groups rule).
GEMM_RULES = (rules.int8_operands, rules.fits_sram)


def gemm_params(layer: Layer, x: QParams, out: QParams, per_channel: bool) -> GemmParams:
    """Quantize the weights and fold bias, zero point and scales into integers."""
    channels = layer.weight.shape[-1]
    bias = layer.bias if layer.bias is not None else np.zeros(channels)
    if not np.all(np.isfinite(bias)):
        raise QuantizationError(f"{layer.name}: the bias contains NaN or Inf")
    w_q, w_scale = quantize_weights(layer.weight, per_channel,
                                    bias_safe_scale(bias, x.scale))
    acc_scale = x.scale * w_scale
    w_sum = w_q.reshape(-1, channels).astype(np.int64).sum(axis=0)
    bias_q = np.round(bias / acc_scale).astype(np.int64) - x.zero_point * w_sum
    bias_q = np.clip(bias_q, -(2**31), 2**31 - 1).astype(np.int32)
    pairs = [fixed_point(float(r)) for r in acc_scale / np.asarray(out.scale, np.float64)]
    lo, hi = clamp_bounds(layer.act, out)
    return GemmParams(w_q, w_scale, bias_q, np.array([p[0] for p in pairs], np.int32),
                      np.array([p[1] for p in pairs], np.int32), x.zero_point,
                      out.zero_point, lo, hi)


def epilogue(p: GemmParams) -> list[Any]:
    """The fused kernel's per-channel operands: bias, multiplier, shift, and (zp, lo, hi)."""
    from tvm import relax

    return [relax.const(p.bias), relax.const(p.multiplier), relax.const(p.shift),
            relax.const(np.array([p.zero_point, p.lo, p.hi], np.int32))]


def fused_gemm(ctx: EmitContext, layer: Layer, func: Any, x: Any, weight: np.ndarray,
               p: GemmParams, m: int, cout: int, on_npu: bool) -> Any:
    """Call one fused GEMM kernel (``func``) and give its result the layer's shape."""
    from tvm import relax

    from lepton_compiler.target import qkernels

    if not on_npu and func.attrs is not None and qkernels.GEMM_ATTR in func.attrs:
        func = func.with_attr(qkernels.GEMM_ATTR, "")  # placed on the host
    out = ctx.call(func, layer.name, [x, relax.const(np.ascontiguousarray(weight)),
                                      *epilogue(p)], (m, cout), "int8")
    out_shape = ctx.graph.shape(layer.output)
    return out if tuple(out_shape) == (m, cout) else ctx.reshape(out, out_shape)


def unfused_gemm(ctx: EmitContext, layer: Layer, p: GemmParams, x: Any, weight: np.ndarray,
                 m: int, k: int, cout: int) -> Any:
    """The GEMM layer as single-op kernels over an [m, k] int8 operand ``x``."""
    from tvm import relax

    from lepton_compiler.target import qkernels

    acc = ctx.call(qkernels.gemm_acc_func(m, k, cout), f"{layer.name}_gemm",
                   [x, relax.const(np.ascontiguousarray(weight))], (m, cout), "int32")
    acc = ctx.call(qkernels.bias_add_func(m, cout), f"{layer.name}_bias",
                   [acc, relax.const(p.bias)], (m, cout), "int32")
    qp = relax.const(np.array([p.zero_point, -128, 127], np.int32))  # no activation here
    y = ctx.call(qkernels.requant_func(m, cout), f"{layer.name}_requant",
                 [acc, relax.const(np.zeros(cout, np.int32)), relax.const(p.multiplier),
                  relax.const(p.shift), qp], (m, cout), "int8")
    if layer.act is not None:
        y = ctx.call(qkernels.clamp_func((m, cout), p.lo, p.hi), f"{layer.name}_act", [y],
                     (m, cout), "int8")
    out_shape = ctx.graph.shape(layer.output)
    return y if tuple(out_shape) == (m, cout) else ctx.reshape(y, out_shape)
