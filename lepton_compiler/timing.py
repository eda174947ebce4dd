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


def measure_alternating(fns: Mapping[str, Callable[[], object]], repeats: int,
                        block: int = 1, warmup: int = 1,
                        pause_s: float = 0.0) -> dict[str, Timing]:
    """Time several callables in turns, so machine noise during the run hits all of them
    alike: each turn makes ``warmup`` untimed calls, then ``block`` timed ones, until every
    callable has ``repeats`` timed calls, then sleeps ``pause_s``; median and minimum per
    name. The pause and the warm-up calls keep one system's thread pool (still spinning after
    its last call) out of the next system's timed calls."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(-(-repeats // block)):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
            if pause_s:
                time.sleep(pause_s)
    return {name: Timing(float(np.median(t) * 1e3), float(np.min(t) * 1e3))
            for name, t in times.items()}
