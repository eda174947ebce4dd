"""Per-kernel profiles of a Session: wall time (fast mode) or simulated NPU accounting (sim).

The sim cycle model: every DMA transfer (operand loads, output stores) is double-buffered, so
DMA overlaps compute except the prologue (the first operand strips)::

    cycles = max(busy, dma_cycles) + prologue_cycles

where ``busy`` is the matrix engine's and the vector unit's work. The vector unit
requantizes a GEMM's output blocks (``output_blocks`` of them, ``requant_block_cycles``
each) while the engine computes: a block is ready after its last K block, and its
requantize overlaps the next block's last K block (``overlap_window`` cycles; the
accumulators hold a whole row strip, or are double-buffered when K fits one block), so a
block exposes what exceeds the window, and the last block all of it::

    busy = min(compute + vector,
               compute + (output_blocks - 1) * max(0, requant_block_cycles - overlap_window)
               + requant_block_cycles)

Kernels without those figures (the vector unit's own layers) run in series:
``busy = compute_cycles + vector_cycles``.

A host kernel (a fallback) is charged the spec's stated host cost (:func:`host_cycles`), so
a profile's total counts NPU and host work in one unit.

The roofline of an NPU kernel is ``max(useful MACs / peak MACs per cycle, minimal DRAM bytes /
DMA bytes per cycle)``, where the minimal bytes read every operand and write every result once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


def host_cycles(macs: int, nbytes: int, cost: Mapping[str, int]) -> int:
    """The sim's stated cost of a host kernel in NPU cycles (the spec's ``[host_fallback]``):
    ``call_cycles + ceil(macs / macs_per_cycle) + ceil(bytes / bytes_per_cycle)``."""
    return (int(cost["call_cycles"]) + -(-int(macs) // int(cost["macs_per_cycle"]))
            + -(-int(nbytes) // int(cost["bytes_per_cycle"])))


def busy_cycles(compute: int, vector: int, static: Mapping[str, int]) -> int:
    """The matrix engine's and the vector unit's cycles together (``busy`` above): in series,
    or overlapped per output block where the static figures say so."""
    busy = compute + vector
    blocks = static.get("output_blocks", 0)
    if blocks and compute:
        block = static.get("requant_block_cycles", 0)
        exposed = (blocks - 1) * max(0, block - static.get("overlap_window", 0)) + block
        busy = min(busy, compute + exposed)
    return busy


def sim_cycles(counters: Mapping[str, int], static: Mapping[str, int]) -> int:
    """Cycles of one kernel call from its sim counters and the compiler's static figures."""
    busy = busy_cycles(counters.get("compute_cycles", 0), counters.get("vector_cycles", 0),
                       static)
    return max(busy, counters.get("dma_cycles", 0)) + static.get("prologue_cycles", 0)


@dataclass
class KernelProfile:
    """One kernel call of the plan.

    ``layer`` is the source layer the kernel computes (empty when the compiler recorded none),
    ``ops`` the source operators fused into it, ``unit`` "npu" or "host". ``macs`` counts
    the layer's multiply-accumulates (host and NPU); the ``cycles``, ``macs_issued``,
    ``dram_bytes`` and ``counters`` figures are filled in sim mode for NPU kernels.
    """

    index: int
    kernel: str
    ops: tuple[str, ...]
    time_ms: float
    layer: str = ""
    unit: str = "host"
    macs: int = 0
    cycles: int = 0
    macs_useful: int = 0
    macs_issued: int = 0
    dram_bytes: int = 0
    min_dram_bytes: int = 0
    sram_bytes: dict[str, int] = field(default_factory=dict)  # peak per SRAM scope
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def utilisation(self) -> float:
        """Useful MACs per peak MAC-cycle (sim mode; 0 for host kernels)."""
        peak = self.counters.get("_peak_macs_per_cycle", 0)
        return self.macs_useful / (self.cycles * peak) if self.cycles and peak else 0.0


@dataclass
class Profile:
    """A profile of one run: per-kernel rows, totals and the NPU's peak figures.

    ``peak_macs_per_cycle``, ``dma_bytes_per_cycle`` and ``clock_hz`` come from the artifact's
    target (0 for host artifacts); they place the kernels on the roofline.
    """

    mode: str
    kernels: list[KernelProfile]
    peak_macs_per_cycle: int = 0
    dma_bytes_per_cycle: int = 0
    clock_hz: int = 0

    @property
    def total_ms(self) -> float:
        return sum(k.time_ms for k in self.kernels)

    @property
    def total_cycles(self) -> int:
        return sum(k.cycles for k in self.kernels)

    @property
    def total_macs(self) -> int:
        return sum(k.macs for k in self.kernels)

    @property
    def total_dram_bytes(self) -> int:
        return sum(k.dram_bytes for k in self.kernels)

    @property
    def total_onchip_bytes(self) -> int:
        """Bytes of NPU transfers that stayed in SRAM instead of DRAM (cascading, line
        buffers; sim mode)."""
        return sum(k.counters.get("onchip_bytes", 0) for k in self.kernels)

    def roofline_cycles(self, kernel: KernelProfile) -> float:
        """The kernel's roofline bound in cycles (0 when unknown or not an NPU kernel)."""
        if not (kernel.cycles and self.peak_macs_per_cycle and self.dma_bytes_per_cycle):
            return 0.0
        return max(kernel.macs_useful / self.peak_macs_per_cycle,
                   kernel.min_dram_bytes / self.dma_bytes_per_cycle)

    @property
    def utilisation(self) -> float:
        """Useful MACs over peak MAC-cycles across the NPU kernels (sim mode)."""
        cycles = self.total_cycles
        useful = sum(k.macs_useful for k in self.kernels)
        return useful / (cycles * self.peak_macs_per_cycle) \
            if cycles and self.peak_macs_per_cycle else 0.0

    def table(self) -> str:
        """A plain-text table of the profile."""
        lines = [f"{'#':>3} {'kernel':<34}{'layer':<18}{'unit':<5}{'ms':>9}{'MACs':>12}"
                 f"{'cycles':>11}{'util':>6}{'DRAM B':>11}"]
        for k in self.kernels:
            lines.append(f"{k.index:>3} {k.kernel[:33]:<34}{k.layer[:17]:<18}{k.unit:<5}"
                         f"{k.time_ms:>9.3f}{k.macs:>12}{k.cycles:>11}{k.utilisation:>6.0%}"
                         f"{k.dram_bytes:>11}")
        lines.append(f"{'':>3} {'total':<34}{'':<18}{'':<5}{self.total_ms:>9.3f}"
                     f"{self.total_macs:>12}{self.total_cycles:>11}{self.utilisation:>6.0%}"
                     f"{self.total_dram_bytes:>11}")
        if self.total_onchip_bytes:
            lines.append(f"{'':>3} {self.total_onchip_bytes} B of transfers stayed in SRAM "
                         "(cascades, line buffers; not counted as DRAM bytes)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the rows (with utilisation and roofline) and the totals."""
        rows = []
        for k in self.kernels:
            row = asdict(k)
            row["ops"] = list(k.ops)
            row["utilisation"] = k.utilisation
            row["roofline_cycles"] = self.roofline_cycles(k)
            rows.append(row)
        return {
            "mode": self.mode, "kernels": rows,
            "peak_macs_per_cycle": self.peak_macs_per_cycle,
            "dma_bytes_per_cycle": self.dma_bytes_per_cycle, "clock_hz": self.clock_hz,
            "totals": {"time_ms": self.total_ms, "cycles": self.total_cycles,
                       "macs": self.total_macs, "dram_bytes": self.total_dram_bytes,
                       "onchip_bytes": self.total_onchip_bytes,
                       "utilisation": self.utilisation},
        }
