"""Calibration statistics and the range each method chooses from them.

Statistics are collected in two passes over the calibration set: the exact min/max of every
observed tensor, then (for the histogram methods) a fixed-range histogram of 2048 bins over
``[min, max]``. Sums are exact integer counts in a fixed order, so the same data gives
bit-identical ranges. Methods:

- ``minmax``: the observed range.
- ``percentile``: the ``percentile`` and ``100 - percentile`` points of the distribution.
- ``entropy``: the clipping threshold minimising the KL divergence between the float
  histogram and its quantized version (the TensorRT procedure).
- ``mse``: the clipping threshold minimising the expected squared quantization error.
- ``auto``: per tensor, whichever of the four gives the highest SQNR of the tensor's own
  quantize-dequantize over its calibration histogram (:func:`choose_method`).

Entropy and MSE clip symmetrically around zero for signed tensors and only the top for
non-negative ones (post-ReLU), where the 256 levels span ``[0, t]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("minmax", "percentile", "entropy", "mse", "auto")
#: The methods ``auto`` chooses among, per tensor.
AUTO_CANDIDATES = ("minmax", "percentile", "entropy", "mse")
BINS = 2048
#: Values at or beyond this magnitude (and +-inf) are sentinels, not data: the additive
#: attention masks of transformers hold -inf or ``finfo(float32).min`` where a token is
#: padding. Ranges come from the other values; a tensor holding sentinels stays float.
SENTINEL = 1e30


def sentinel_mask(x: np.ndarray) -> np.ndarray:
    """Where ``x`` holds sentinel values (+-inf or magnitude >= :data:`SENTINEL`)."""
    return np.abs(x) >= SENTINEL


@dataclass
class Stats:
    """What calibration saw of one tensor."""

    min: float = np.inf
    max: float = -np.inf
    count: int = 0
    hist: np.ndarray | None = None
    sentinels: int = 0   # how many sentinel values (see SENTINEL) were left out
    # Per channel (the last axis), for tensors that may get one scale per channel.
    channel_min: np.ndarray | None = None
    channel_max: np.ndarray | None = None
    channels: bool = False

    def update_range(self, x: np.ndarray) -> None:
        if self.channels and x.ndim and not sentinel_mask(x).any():
            flat = x.reshape(-1, x.shape[-1])
            lo, hi = flat.min(axis=0).astype(np.float64), flat.max(axis=0).astype(np.float64)
            self.channel_min = lo if self.channel_min is None else \
                np.minimum(self.channel_min, lo)
            self.channel_max = hi if self.channel_max is None else \
                np.maximum(self.channel_max, hi)
        x = self._data(x, count=True)
        if x.size:
            self.min = min(self.min, float(x.min()))
            self.max = max(self.max, float(x.max()))
        self.count += x.size

    def _data(self, x: np.ndarray, count: bool = False) -> np.ndarray:
        special = sentinel_mask(x)
        if not special.any():
            return x
        if count:
            self.sentinels += int(special.sum())
        return x[~special]

    def start_histogram(self) -> None:
        self.hist = np.zeros(BINS, np.int64)

    def update_histogram(self, x: np.ndarray) -> None:
        x = self._data(x)
        if self.max <= self.min:
            self.hist[0] += x.size
            return
        edges = (x.astype(np.float64).ravel() - self.min) / (self.max - self.min) * BINS
        idx = np.clip(edges.astype(np.int64), 0, BINS - 1)
        self.hist += np.bincount(idx, minlength=BINS)


def choose_method(stats: Stats, percentile: float = 99.99
                  ) -> tuple[str, tuple[float, float]]:
    """``auto``: the candidate method whose range quantizes the tensor's calibration
    histogram with the least squared error (the highest SQNR), and that range."""
    best: tuple[float, str, tuple[float, float]] | None = None
    for method in AUTO_CANDIDATES:
        lo, hi = choose_range(stats, method, percentile)
        error = histogram_error(stats, lo, hi)
        if best is None or error < best[0]:
            best = (error, method, (lo, hi))
    return best[1], best[2]


def histogram_error(stats: Stats, lo: float, hi: float) -> float:
    """Expected squared error of quantizing the histogrammed values to ``[lo, hi]`` (256
    affine levels, values outside clamped)."""
    if stats.hist is None or stats.max <= stats.min:
        return 0.0
    scale, zero_point = qparams(lo, hi)
    width = (stats.max - stats.min) / BINS
    centers = stats.min + (np.arange(BINS) + 0.5) * width
    q = np.clip(np.floor(centers / scale + 0.5) + zero_point, -128, 127)
    return float(np.sum(stats.hist * ((q - zero_point) * scale - centers) ** 2))


def choose_range(stats: Stats, method: str, percentile: float = 99.99) -> tuple[float, float]:
    """The ``(lo, hi)`` range ``method`` picks from ``stats`` (always including 0)."""
    if method == "auto":
        return choose_method(stats, percentile)[1]
    if stats.min > stats.max:  # nothing but sentinels
        return 0.0, 0.0
    lo, hi = min(stats.min, 0.0), max(stats.max, 0.0)
    if method == "minmax" or stats.hist is None or stats.max <= stats.min or hi - lo == 0:
        return lo, hi
    width = (stats.max - stats.min) / BINS
    centers = stats.min + (np.arange(BINS) + 0.5) * width
    hist = stats.hist.astype(np.float64)
    if method == "percentile":
        cdf = np.cumsum(hist) / hist.sum()
        top = stats.min + (np.searchsorted(cdf, percentile / 100.0) + 1) * width
        bottom = stats.min + np.searchsorted(cdf, 1 - percentile / 100.0) * width
        return min(bottom, 0.0) if stats.min < 0 else lo, max(min(top, stats.max), 0.0)
    signed = stats.min < 0
    mags = np.abs(centers)
    order = np.argsort(mags, kind="stable")
    mags, counts = mags[order], hist[order]
    peak = float(mags[-1]) + width / 2
    if method == "entropy":
        t = _kl_threshold(mags, counts, peak, 127 if signed else 255)
    elif method == "mse":
        t = _mse_threshold(centers, hist, peak, signed)
    else:
        raise ValueError(f"unknown calibration method {method!r}")
    return (max(lo, -t) if signed else lo), min(hi, t)


def _kl_threshold(mags: np.ndarray, counts: np.ndarray, peak: float, levels: int) -> float:
    """Threshold on |x| minimising KL(P || Q) over a 2048-bin |x| histogram."""
    nbins = BINS
    hist, _ = np.histogram(mags, bins=nbins, range=(0, peak), weights=counts)
    best_t, best_kl = peak, np.inf
    for i in range(levels + 1, nbins + 1, 8):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()                 # clipped mass into the last bin
        if p.sum() == 0:
            continue
        # Quantize the first i bins into `levels` groups, spreading each over its non-zero bins.
        groups = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for g in groups:
            src = hist[g]
            nonzero = src > 0
            if nonzero.any():
                q[g[nonzero]] = src.sum() / nonzero.sum()
        p_norm = p / p.sum()
        q_sum = q.sum()
        if q_sum == 0:
            continue
        q_norm = q / q_sum
        mask = p_norm > 0
        q_safe = np.where(q_norm[mask] > 0, q_norm[mask], 1e-12)
        kl = float(np.sum(p_norm[mask] * np.log(p_norm[mask] / q_safe)))
        if kl < best_kl:
            best_kl, best_t = kl, (i / nbins) * peak
    return best_t


def _mse_threshold(centers: np.ndarray, hist: np.ndarray, peak: float, signed: bool) -> float:
    """Threshold minimising the histogram-weighted squared error of quantize-dequantize."""
    best_t, best_err = peak, np.inf
    for frac in np.linspace(0.05, 1.0, 96):
        t = peak * frac
        lo, hi = (-t, t) if signed else (0.0, t)
        scale = (hi - lo) / 255
        q = np.clip(np.floor((np.clip(centers, lo, hi) - lo) / scale + 0.5), 0, 255)
        err = float(np.sum(hist * (q * scale + lo - centers) ** 2))
        if err < best_err:
            best_err, best_t = err, t
    return best_t


def qparams(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero_point) of an int8 affine range covering ``[lo, hi]`` (containing 0).

    The scale is a float32 value (kernels compute in float32); a zero-width range (a
    constant-zero tensor) gets scale 1, which represents it exactly.
    """
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"range [{lo}, {hi}] is not finite")
    if hi - lo <= 1e-30:
        return 1.0, 0
    scale = float(np.float32((hi - lo) / 255.0))
    if scale <= 0 or not np.isfinite(scale):
        return 1.0, 0
    zero_point = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return scale, zero_point
