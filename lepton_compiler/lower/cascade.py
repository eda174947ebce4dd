"""Cascading: keep an activation in the NPU's SRAM between the layer that writes it and the
one layer that reads it, instead of a round trip through DRAM.

Consecutive NPU calls ``producer -> consumer`` cascade when the producer's output is an
arena tensor that no other call reads (a reshape view of it counts as it), and it fits the
input SRAM beside both calls' own input working sets (and beside every other tensor held at
the same time, when cascades chain). The plan marks the tensor ``resident`` on both calls;
in sim mode the runtime tells the NPU emulation, which then counts the producer's stores and
the consumer's loads of it as on-chip transfers (``onchip_bytes``: no DRAM bytes, no DMA
cycles). The data path
is unchanged, so a cascaded build computes the same integers as an uncascaded one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lepton_compiler.target.spec import LeptonSpec


@dataclass(frozen=True)
class Cascade:
    """One tensor kept in SRAM from ``producer`` to ``consumer`` (layer or kernel names)."""

    producer: str
    consumer: str
    tensor: int
    bytes: int
    sram_input_bytes: int  # input SRAM in use while the consumer runs (working set + held)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nbytes(tensor: dict) -> int:
    return int(np.prod(tensor["shape"], dtype=np.int64)) * np.dtype(tensor["dtype"]).itemsize


def plan_cascades(plan: dict, spec: LeptonSpec) -> list[Cascade]:
    """Mark the cascades of ``plan`` (its calls get ``resident`` tensor lists) and return
    them. Only NPU calls (with static sim figures) take part."""
    tensors, calls = plan["tensors"], plan["calls"]

    def base(t: int) -> int:
        return int(tensors[t].get("base", t)) if tensors[t]["kind"] == "view" else t

    readers: dict[int, set[int]] = {}
    for i, call in enumerate(calls):
        for t in call["args"][:-1]:
            readers.setdefault(base(t), set()).add(i)
    held = [0] * len(calls)  # bytes held in input SRAM during each call
    cascades = []
    for i in range(len(calls) - 1):
        producer, consumer = calls[i], calls[i + 1]
        if "sim" not in producer or "sim" not in consumer:
            continue
        out = base(producer["args"][-1])
        if tensors[out]["kind"] != "arena" or readers.get(out) != {i + 1}:
            continue
        reads = [t for t in consumer["args"][:-1] if base(t) == out]
        size = _nbytes(tensors[out])
        limit = spec.sram.input_bytes
        need_p = producer["sim"].get("sram_input_bytes", limit) + held[i] + size
        need_c = consumer["sim"].get("sram_input_bytes", limit) + held[i + 1] + size
        if not reads or need_p > limit or need_c > limit:
            continue
        held[i] += size
        held[i + 1] += size
        producer.setdefault("resident", []).append(producer["args"][-1])
        consumer.setdefault("resident", []).extend(t for t in reads if t not in
                                                   consumer.get("resident", []))
        cascades.append(Cascade(_name(producer), _name(consumer), out, size, need_c))
    return cascades


def _name(call: dict) -> str:
    return call["ops"][0] if call.get("ops") else call["kernel"]
