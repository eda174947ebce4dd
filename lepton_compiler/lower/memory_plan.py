"""Static memory planning: place tensors with live ranges into one arena without overlap."""

from __future__ import annotations

from dataclasses import dataclass

from lepton_runtime.format import ALIGNMENT


@dataclass(frozen=True)
class Interval:
    """A buffer of ``size`` bytes live from call ``start`` through call ``end`` inclusive."""

    size: int
    start: int
    end: int


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def plan_arena(buffers: list[Interval]) -> tuple[list[int], int]:
    """Assign aligned offsets so that buffers whose live ranges overlap never share bytes.

    Greedy by size (largest first), each at the lowest aligned offset that fits between the
    already placed buffers it is live with. Returns (offsets, arena size in bytes).
    """
    order = sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, buffers[i].start))
    offsets = [0] * len(buffers)
    placed: list[int] = []
    total = 0
    for i in order:
        buf = buffers[i]
        size = _align(max(buf.size, 1))
        conflicts = sorted(
            (offsets[j], offsets[j] + _align(max(buffers[j].size, 1)))
            for j in placed
            if buffers[j].start <= buf.end and buf.start <= buffers[j].end
        )
        offset = 0
        for lo, hi in conflicts:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        offsets[i] = offset
        placed.append(i)
        total = max(total, offset + size)
    return offsets, total


def find_overlap(buffers: list[Interval], offsets: list[int]) -> tuple[int, int] | None:
    """The first pair of simultaneously live buffers that share bytes, or None."""
    for i, a in enumerate(buffers):
        for j in range(i):
            b = buffers[j]
            if not (a.start <= b.end and b.start <= a.end) or not (a.size and b.size):
                continue
            if offsets[i] < offsets[j] + b.size and offsets[j] < offsets[i] + a.size:
                return j, i
    return None
