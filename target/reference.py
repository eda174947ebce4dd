"""Numpy reference of the Lepton NPU's integer semantics: the oracle kernels match bit for bit.

- GEMM: int8 x int8 products summed exactly in int32.
- Requantize (per output channel ``j``)::

      y = clamp((((int64(acc) + bias[j]) * multiplier[j] + 2**(shift[j] - 1)) >> shift[j])
                + zero_point, lo, hi)                     # >> is arithmetic (floor)

  i.e. the fixed-point product rounded half up, then the output zero point, then the clamp
  bounds that also express ReLU / ReLU6; ``shift >= 1`` includes the Q31 multiplier's 31 bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact int32 ``a @ b`` of int8 operands."""
    return a.astype(np.int32) @ b.astype(np.int32)


def requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, zero_point: int,
               lo: int, hi: int, bias: np.ndarray | None = None) -> np.ndarray:
    """int32 accumulators (last axis = output channel) to int8 (see module docstring)."""
    if np.any(shift < 1) or np.any(shift > 62):
        raise ValueError("requantize shift must lie in [1, 62]")
    wide = acc.astype(np.int64)
    if bias is not None:
        wide = wide + bias.astype(np.int64)
    wide = wide * multiplier.astype(np.int64)
    rounded = (wide + (np.int64(1) << (shift.astype(np.int64) - 1))) >> shift.astype(np.int64)
    return np.clip(rounded + zero_point, lo, hi).astype(np.int8)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(multiplier, shift) with ``multiplier * 2**-shift ~= real``, multiplier in [2^30, 2^31).

    For ``0 < real < 2**31``; the shift includes the multiplier's 31 fractional bits.
    """
    if not 0 < real < 2**31:
        raise ValueError(f"requantization scale {real} is out of range")
    mantissa, exponent = np.frexp(real)  # real = mantissa * 2**exponent, mantissa in [0.5, 1)
    multiplier = round(float(mantissa) * (1 << 31))
    if multiplier == 1 << 31:
        multiplier //= 2
        exponent += 1
    return multiplier, 31 - int(exponent)


# --- Quantized operators (the semantics of ``qkernels``; activations NHWC) -----------------

def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 -> int8: ``clamp(floor(x / scale + 0.5) + zero_point, -128, 127)`` in float32."""
    x = np.asarray(x, np.float32)
    v = np.floor(x / np.float32(scale) + np.float32(0.5)) + np.float32(zero_point)
    return np.clip(v, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: Any, zero_point: int) -> np.ndarray:
    """int8 -> float32: ``float32(q - zero_point) * scale``; ``scale`` one number, or one per
    channel (the last axis)."""
    return (q.astype(np.int32) - zero_point).astype(np.float32) * \
        np.asarray(scale, np.float32)


def dense(x: np.ndarray, w: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
          shift: np.ndarray, zero_point: int, lo: int, hi: int) -> np.ndarray:
    """``requantize(x @ w + bias)``: int8 ``x[m, k]``, ``w[k, n]``; int32 ``bias[n]``."""
    return requantize(gemm(x, w), multiplier, shift, zero_point, lo, hi, bias)


def im2col(x: np.ndarray, kh: int, kw: int, stride: tuple[int, int],
           padding: tuple[int, int, int, int], dilation: tuple[int, int],
           pad_value: int) -> np.ndarray:
    """NHWC windows as rows ``[N*OH*OW, KH*KW*C]`` (column order ky, kx, c)."""
    n, h, w, c = x.shape
    top, left, bottom, right = padding
    padded = np.full((n, h + top + bottom, w + left + right, c), pad_value, x.dtype)
    padded[:, top:top + h, left:left + w] = x
    oh = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = np.empty((n, oh, ow, kh, kw, c), x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dilation[0], kx * dilation[1]
            cols[:, :, :, ky, kx] = padded[:, y0:y0 + stride[0] * (oh - 1) + 1:stride[0],
                                           x0:x0 + stride[1] * (ow - 1) + 1:stride[1]]
    return cols.reshape(n * oh * ow, kh * kw * c)


def conv2d(x: np.ndarray, w_hwio: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
           shift: np.ndarray, input_zero_point: int, zero_point: int, lo: int, hi: int,
           stride: tuple[int, int], padding: tuple[int, int, int, int],
           dilation: tuple[int, int]) -> np.ndarray:
    """NHWC int8 conv2d (groups 1): padding takes the input zero point; returns NHWC int8."""
    kh, kw, cin, cout = w_hwio.shape
    cols = im2col(x, kh, kw, stride, padding, dilation, input_zero_point)
    out = dense(cols, w_hwio.reshape(kh * kw * cin, cout), bias, multiplier, shift,
                zero_point, lo, hi)
    n, h, w_, _ = x.shape
    oh = (h + padding[0] + padding[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w_ + padding[1] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return out.reshape(n, oh, ow, cout)


def grouped_conv2d(x: np.ndarray, w_hwio: np.ndarray, groups: int, bias: np.ndarray,
                   multiplier: np.ndarray, shift: np.ndarray, input_zero_point: int,
                   zero_point: int, lo: int, hi: int, stride: tuple[int, int],
                   padding: tuple[int, int, int, int], dilation: tuple[int, int]) -> np.ndarray:
    """NHWC int8 grouped/depthwise conv2d: ``w_hwio`` is ``[KH, KW, Cin/groups, Cout]``."""
    kh, kw, cin_g, cout = w_hwio.shape
    cout_g = cout // groups
    accs = []
    for g in range(groups):
        cols = im2col(x[..., g * cin_g:(g + 1) * cin_g], kh, kw, stride, padding, dilation,
                      input_zero_point)
        accs.append(gemm(cols, w_hwio[..., g * cout_g:(g + 1) * cout_g].reshape(-1, cout_g)))
    out = requantize(np.concatenate(accs, axis=1), multiplier, shift, zero_point, lo, hi, bias)
    n, h, w_, _ = x.shape
    oh = (h + padding[0] + padding[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w_ + padding[1] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return out.reshape(n, oh, ow, cout)


def add(a: np.ndarray, b: np.ndarray, za: int, ma: int, zb: int, mb: int, shift: int,
        zo: int, lo: int, hi: int) -> np.ndarray:
    """``clamp((((a - za) * ma + (b - zb) * mb + 2**(shift-1)) >> shift) + zo, lo, hi)``:
    both inputs rescaled to the output scale with one shared shift and a single rounding."""
    acc = (a.astype(np.int64) - za) * ma + (b.astype(np.int64) - zb) * mb
    return np.clip(((acc + (1 << (shift - 1))) >> shift) + zo, lo, hi).astype(np.int8)


def rescale(q: np.ndarray, zi: int, multiplier: int, shift: int, zo: int) -> np.ndarray:
    """int8 in one quantization -> int8 in another:
    ``clamp(((q - zi) * multiplier + 2**(shift-1) >> shift) + zo, -128, 127)``."""
    acc = (q.astype(np.int64) - zi) * multiplier
    return np.clip(((acc + (1 << (shift - 1))) >> shift) + zo, -128, 127).astype(np.int8)


def matmul(a: np.ndarray, b: np.ndarray, za: int, zb: int, multiplier: int, shift: int,
           zero_point: int, lo: int, hi: int) -> np.ndarray:
    """Activation x activation int8 matmul (batched over leading axes):
    ``requantize(sum_k (a - za)(b - zb))`` with one multiplier and shift."""
    acc = np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb)
    n = acc.shape[-1]
    return requantize(acc, np.full(n, multiplier, np.int64), np.full(n, shift, np.int64),
                      zero_point, lo, hi)


def clamp(q: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """ReLU / ReLU6 / clip in the input's own quantization."""
    return np.clip(q, lo, hi).astype(np.int8)


def mean(x: np.ndarray, axes: tuple[int, ...], keepdims: bool, zi: int, multiplier: int,
         shift: int, zo: int) -> np.ndarray:
    """int8 mean over ``axes`` into the output's quantization:
    ``clamp(zo + ((sum - count * zi) * multiplier + 2**(shift-1) >> shift), -128, 127)``."""
    count = int(np.prod([x.shape[a] for a in axes]))
    total = x.astype(np.int64).sum(axis=axes, keepdims=keepdims) - count * zi
    rounded = (total * multiplier + (1 << (shift - 1))) >> shift
    return np.clip(rounded + zo, -128, 127).astype(np.int8)


def max_pool2d(x: np.ndarray, pool: tuple[int, int], stride: tuple[int, int],
               padding: tuple[int, int, int, int]) -> np.ndarray:
    """NHWC int8 max pooling (padding below every value)."""
    cols = im2col(x, pool[0], pool[1], stride, padding, (1, 1), -128)
    n, c = x.shape[0], x.shape[3]
    h, w = x.shape[1], x.shape[2]
    oh = (h + padding[0] + padding[2] - pool[0]) // stride[0] + 1
    ow = (w + padding[1] + padding[3] - pool[1]) // stride[1] + 1
    return cols.reshape(n * oh * ow, pool[0] * pool[1], c).max(axis=1).reshape(n, oh, ow, c)


def avg_pool2d(x: np.ndarray, pool: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """NHWC int8 average pooling (no padding), rounded half up, in the input's own
    quantization."""
    n, h, w, c = x.shape
    oh = (h - pool[0]) // stride[0] + 1
    ow = (w - pool[1]) // stride[1] + 1
    cols = im2col(x, pool[0], pool[1], stride, (0, 0, 0, 0), (1, 1), 0)
    total = cols.reshape(n * oh * ow, pool[0] * pool[1], c).astype(np.int64).sum(axis=1)
    count = pool[0] * pool[1]
    return np.floor_divide(2 * total + count, 2 * count).astype(np.int8).reshape(n, oh, ow, c)


# --- vector-unit transformer ops (rows of the last axis; see passes/layers/softmax.py,
# layer_norm.py and lut.py for how the tables and constants are made) ----------------------

#: Softmax output quantization: probabilities in [0, 1] as int8 with scale 1/256, zp -128.
SOFTMAX_SCALE, SOFTMAX_ZERO_POINT = 1.0 / 256.0, -128
#: Fixed-point exponent of the softmax reciprocal ``2^SOFTMAX_RECIP_BITS // sum``.
SOFTMAX_RECIP_BITS = 45
#: Fractional bits of the normalized value in layer norm.
LAYER_NORM_FRAC = 16


def lut(q: np.ndarray, table: np.ndarray) -> np.ndarray:
    """int8 -> int8 through a 256-entry table indexed by ``q + 128``."""
    return np.asarray(table, np.int64)[q.astype(np.int64) + 128].astype(np.int8)


def softmax(x: np.ndarray, exp_table: np.ndarray) -> np.ndarray:
    """int8 softmax over the last axis. With ``d = x - max(x) in [-255, 0]`` and
    ``e = exp_table[d + 255]`` (int32, ``round(exp(scale * d) * 2^15)``), ``S = sum(e)`` and
    ``R = 2^45 // S``: ``clamp(((e * R + 2^36) >> 37) - 128, -128, 127)`` (scale 1/256)."""
    xi = x.astype(np.int64)
    e = np.asarray(exp_table, np.int64)[xi - xi.max(axis=-1, keepdims=True) + 255]
    recip = (np.int64(1) << SOFTMAX_RECIP_BITS) // e.sum(axis=-1, keepdims=True)
    shift = SOFTMAX_RECIP_BITS - 8
    q = ((e * recip + (np.int64(1) << (shift - 1))) >> shift) + SOFTMAX_ZERO_POINT
    return np.clip(q, -128, 127).astype(np.int8)


def isqrt(v: np.ndarray) -> np.ndarray:
    """floor(sqrt(v)) of non-negative int64 values, exactly."""
    v = np.asarray(v, np.int64)
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    r = np.where(r * r > v, r - 1, r)      # float rounding, at most one step either way
    return np.where((r + 1) * (r + 1) <= v, r + 1, r)


def layer_norm(x: np.ndarray, eps_term: int, gain: np.ndarray, offset: np.ndarray,
               shift: int) -> np.ndarray:
    """int8 layer norm over the last axis (``H`` values) into the output's quantization.

    ``sx = sum(x)``, ``D = H * sum(x^2) - sx^2 + eps_term`` (``eps_term = max(1,
    round(H^2 eps / s^2))``), scaled by ``4^p`` so that it has at least 30 bits (``p =
    max(0, (31 - bit_length(D)) // 2)``: a small ``D``'s square root keeps 15 bits), ``sd =
    isqrt(D 4^p)``, ``k = bit_length(sd)``, ``R = 2^(29+k) // sd``; the normalized value in
    Q16 is ``n = (H x - sx) R`` shifted right by ``13 + k - p`` (rounding), and
    ``clamp((n * gain + offset + 2^(shift-1)) >> shift, -128, 127)`` with the per-channel
    ``gain = round(gamma / s_out * 2^(shift-16))`` and ``offset = round((beta / s_out + zo)
    * 2^shift)``."""
    xi = x.astype(np.int64)
    h = xi.shape[-1]
    sx = xi.sum(axis=-1, keepdims=True)
    d = h * (xi * xi).sum(axis=-1, keepdims=True) - sx * sx + eps_term
    bits = np.frompyfunc(lambda v: int(v).bit_length(), 1, 1)
    p = np.maximum(0, (31 - bits(d).astype(np.int64)) // 2)
    sd = isqrt(d << (2 * p))
    k = bits(sd).astype(np.int64)
    recip = (np.int64(1) << (29 + k)) // sd
    s = 13 + k - p
    n = ((h * xi - sx) * recip + (np.int64(1) << (s - 1))) >> s
    y = (n * np.asarray(gain, np.int64) + np.asarray(offset, np.int64)
         + (np.int64(1) << (shift - 1))) >> shift
    return np.clip(y, -128, 127).astype(np.int8)
