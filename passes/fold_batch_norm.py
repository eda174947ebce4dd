"""FoldBatchNorm: fold inference batch-norm into the preceding conv2d's weights and bias,
and any other inference batch-norm into one scale and shift.

Before::

    c = R.nn.conv2d(x, W)                 # NCHW / OIHW, W constant
    c = R.add(c, b)                       # optional, b constant
    y = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, training=False)[0]

After::

    y = R.add(R.nn.conv2d(x, W * s[:, None, None, None]), (b - mean) * s + beta)
    # s = gamma / sqrt(var + eps)

Preconditions: weights and batch-norm statistics are constants (weights bound at import),
conv2d in NCHW/OIHW (before layout conversion), batch-norm over axis 1. Anything else is
left unchanged. Reads no spec fields.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, wildcard

from lepton_compiler import tvm_compat


def _patterns():
    weight = is_const()
    conv = is_op("relax.nn.conv2d")(wildcard(), weight)
    bias = is_const()
    with_bias = is_op("relax.add")(conv, bias)
    stats = [is_const() for _ in range(4)]
    source = with_bias | conv
    bn = is_op("relax.nn.batch_norm")(source, *stats)
    return is_tuple_get_item(bn, 0), conv, weight, with_bias, bias, bn, stats


def _const(expr) -> np.ndarray:
    return tvm_compat.constant_numpy(expr)


@relax.transform.function_pass(opt_level=0, name="lepton.FoldBatchNorm")
class FoldBatchNorm:
    """Fold inference batch-norm into conv2d weights and bias (see module docstring)."""

    def transform_function(self, func, mod, ctx):
        if not isinstance(func, relax.Function):
            return func
        pattern, conv_p, weight_p, with_bias_p, bias_p, bn_p, stats_p = _patterns()

        def rewriter(expr, matches):
            conv = matches[conv_p]
            bn = matches[bn_p]
            attrs = conv.attrs
            if (attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW"
                    or int(bn.attrs.axis) != 1 or bool(bn.attrs.training)):
                return expr
            weight = _const(matches[weight_p])
            gamma, beta, mean, var = (_const(matches[p]) for p in stats_p)
            eps = float(bn.attrs.epsilon)
            scale = gamma / np.sqrt(var + eps)
            bias = np.zeros(weight.shape[0], dtype=weight.dtype)
            if with_bias_p in matches:
                raw_bias = _const(matches[bias_p])
                if raw_bias.size != weight.shape[0]:
                    return expr
                bias = raw_bias.reshape(-1)
            new_weight = (weight * scale.reshape(-1, 1, 1, 1)).astype(weight.dtype)
            new_bias = ((bias - mean) * scale + beta).astype(weight.dtype)
            new_conv = relax.op.nn.conv2d(
                conv.args[0],
                relax.const(new_weight),
                strides=attrs.strides,
                padding=attrs.padding,
                dilation=attrs.dilation,
                groups=attrs.groups,
                data_layout="NCHW",
                kernel_layout="OIHW",
                out_layout=attrs.out_layout,
                out_dtype=attrs.out_dtype,
            )
            return relax.op.add(new_conv, relax.const(new_bias.reshape(1, -1, 1, 1)))

        func = relax.dpl.rewrite_call(pattern, rewriter, func)
        return _scale_shift(func)


def _scale_shift(func):
    """Any other inference batch-norm with constant statistics becomes ``x * s + t``
    (``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s``, computed in float64): the
    form onnxruntime runs, which stays finite wherever the result is, unlike
    ``(x - mean) / sqrt(var + eps)`` that overflows first for large ``x`` and small ``var``."""
    stats = [is_const() for _ in range(4)]
    source = wildcard()
    bn = is_op("relax.nn.batch_norm")(source, *stats)
    pattern = is_tuple_get_item(bn, 0)

    def rewriter(expr, matches):
        call = matches[bn]
        x = matches[source]
        dtype = str(getattr(x.ty, "dtype", ""))
        if bool(call.attrs.training) or not dtype.startswith("float"):
            return expr
        try:
            rank = len(tvm_compat.shape_of(x.ty))
        except ValueError:
            return expr
        axis = int(call.attrs.axis) % rank
        gamma, beta, mean, var = (_const(matches[p]).astype(np.float64) for p in stats)
        scale = gamma / np.sqrt(var + float(call.attrs.epsilon))
        shift = beta - mean * scale
        shape = [1] * rank
        shape[axis] = -1
        return relax.op.add(
            relax.op.multiply(x, relax.const(scale.astype(dtype).reshape(shape))),
            relax.const(shift.astype(dtype).reshape(shape)))

    return relax.dpl.rewrite_call(pattern, rewriter, func)


__all__ = ["FoldBatchNorm"]
