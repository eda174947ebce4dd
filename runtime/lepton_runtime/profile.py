"""Per-kernel profiles of a Session: wall time (fast mode) or simulated NPU accounting (sim).

The sim cycle model: every DMA transfer (operand loads, output stores) is double-buffered, so
DMA overlaps compute except the prologue (the first operand strips)::

    cycles = max(compute_cycles + vector_cycles, dma_cycles) + prologue_cycles
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def sim_cycles(counters: Mapping[str, int], static: Mapping[str, int]) -> int:
    """Cycles of one kernel call from its sim counters and the compiler's static figures."""
    compute = counters.get("compute_cycles", 0) + counters.get("vector_cycles", 0)
    dma = counters.get("dma_cycles", 0)
    return max(compute, dma) + static.get("prologue_cycles", 0)


@dataclass
class KernelProfile:
    """One kernel call of the plan."""

    index: int
    kernel: str
    ops: tuple[str, ...]
    time_ms: float
    cycles: int = 0
    macs_useful: int = 0
    macs_issued: int = 0
    dram_bytes: int = 0
    sram_bytes: dict[str, int] = field(default_factory=dict)  # peak per SRAM scope
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def utilisation(self) -> float:
        """Useful MACs per peak MAC-cycle (sim mode; 0 for host kernels)."""
        peak = self.counters.get("_peak_macs_per_cycle", 0)
        return self.macs_useful / (self.cycles * peak) if self.cycles and peak else 0.0


@dataclass
class Profile:
    """A profile of one run: per-kernel rows and totals."""

    mode: str
    kernels: list[KernelProfile]

    @property
    def total_ms(self) -> float:
        return sum(k.time_ms for k in self.kernels)

    @property
    def total_cycles(self) -> int:
        return sum(k.cycles for k in self.kernels)

    def table(self) -> str:
        """A plain-text table of the profile."""
        lines = [f"{'#':>3} {'kernel':<40}{'ms':>9}{'cycles':>12}{'util':>7}{'DRAM B':>12}"]
        for k in self.kernels:
            lines.append(f"{k.index:>3} {k.kernel[:39]:<40}{k.time_ms:>9.3f}{k.cycles:>12}"
                         f"{k.utilisation:>7.0%}{k.dram_bytes:>12}")
        lines.append(f"{'':>3} {'total':<40}{self.total_ms:>9.3f}{self.total_cycles:>12}")
        return "\n".join(lines)
