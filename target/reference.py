"""Numpy reference of the Lepton NPU's integer semantics: the oracle kernels match bit for bit.

- GEMM: int8 x int8 products summed exactly in int32.
- Requantize (per output channel ``j``)::

      y = clamp((((int64(acc) + bias[j]) * multiplier[j] + 2**(shift[j] - 1)) >> shift[j])
                + zero_point, lo, hi)                     # >> is arithmetic (floor)

  i.e. the fixed-point product rounded half up, then the output zero point, then the clamp
  bounds that also express ReLU / ReLU6; ``shift >= 1`` includes the Q31 multiplier's 31 bits.
"""

from __future__ import annotations

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
