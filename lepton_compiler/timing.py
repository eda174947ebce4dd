"""Wall-clock measurement shared by the demo and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Median and minimum of repeated calls, in milliseconds."""

    median_ms: float
    min_ms: float


def measure(fn: Callable[[], object], repeats: int, warmup: int = 3) -> Timing:
    """Call ``fn`` ``warmup`` times, then time ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Timing(float(np.median(times) * 1e3), float(np.min(times) * 1e3))


def measure_alternating(fns: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, Timing]:
    """Time several callables in turns (one warm-up call before each timed call), so machine
    noise during the run hits all of them alike; median and minimum per name."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(measure(fn, 1, warmup=1).min_ms)
    return {name: Timing(float(np.median(t)), float(np.min(t))) for name, t in times.items()}
