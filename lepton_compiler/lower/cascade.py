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

Without tuning records the planner is greedy: in call order, a cascade is taken when the
tensor fits beside both calls' scheduled working sets and what they already hold.

With a tuning database (``build(..., tuning_db=)``; :class:`CascadeCosts`) the choice is a
search over the tuner's measurements: the tuner measured each GEMM workload with its input,
output or both held in SRAM, under every plan that fits beside them
(``tuning.tuner.cascade_candidates``; deterministic sim cycles). Cascades form a chain
(call i holds its input and/or its output), so an exact dynamic program over the calls picks
the set of cascades and each GEMM layer's plan with the fewest measured cycles (ties: more
cascades, i.e. fewer DRAM bytes): a cascade may need a shallower plan, and two cascades
that share a call may not both fit. Plans it changes go back to the scheduler
(``CascadeCosts.overrides``); a kernel shared by several calls keeps its one plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
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
    #: layers whose GEMM plan was changed to make room for the cascade (tuned builds)
    replanned: tuple[str, ...] = ()
    producer_call: int = -1  # the producer's index in the plan's calls

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nbytes(tensor: dict) -> int:
    return int(np.prod(tensor["shape"], dtype=np.int64)) * np.dtype(tensor["dtype"]).itemsize


@dataclass
class CascadeCosts:
    """Measured cycles of a plan's GEMM calls under each cascade choice, from a tuning
    database: ``workloads`` maps call index -> workload key, ``extents`` -> (M, N, K),
    ``knobs`` -> the scheduled plan's knobs. The planner records the plans it chooses in
    ``overrides`` (workload key -> knobs)."""

    database: Any
    spec: LeptonSpec
    workloads: dict[int, str]
    extents: dict[int, tuple[int, int, int]]
    knobs: dict[int, dict[str, Any]]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def options(self, i: int, resident: Collection[str], room: int, shared: bool
                ) -> list[tuple[float, dict[str, Any], int]]:
        """Measured plans of call ``i`` with ``resident`` held whose input SRAM working set
        fits ``room`` bytes, as (cycles, knobs, input SRAM bytes); just the scheduled plan
        when the kernel is ``shared`` by other calls."""
        from lepton_compiler.target.npu_schedule import plan_from_knobs, sram_needs

        found = []
        for r in self.database.measured_ok(self.workloads[i], sorted(resident)):
            knobs = _plan_knobs(r["knobs"])
            if shared and knobs != self.knobs[i]:
                continue
            need = sram_needs(plan_from_knobs(*self.extents[i], self.spec, knobs),
                              self.spec)["input"]
            if need <= room:
                found.append((float(r["cost"]), knobs, need))
        return found


def _plan_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in knobs.items() if k != "resident"}


@dataclass(frozen=True)
class _Link:
    """A cascade the graph allows: call ``i``'s output, read by call ``i + 1`` only."""

    tensor: int
    reads: tuple[int, ...]
    bytes: int
    first_operand: bool  # the consumer reads it as its first operand (tuning's "input")


def plan_cascades(plan: dict, spec: LeptonSpec, costs: CascadeCosts | None = None,
                  only: Mapping[tuple[int, int], tuple[str, ...]] | None = None
                  ) -> list[Cascade]:
    """Mark the cascades of ``plan`` (its calls get ``resident`` tensor lists) and return
    them. Only NPU calls (with static sim figures) take part. ``costs``: choose from tuning
    records (see the module's doc; chosen plans land in ``costs.overrides``); ``only``:
    take just these (producer, consumer) call index pairs, mapped to the layers replanned for
    them (the pass over a replanned build)."""
    tensors, calls = plan["tensors"], plan["calls"]

    def base(t: int) -> int:
        return int(tensors[t].get("base", t)) if tensors[t]["kind"] == "view" else t

    readers: dict[int, set[int]] = {}
    for i, call in enumerate(calls):
        for t in call["args"][:-1]:
            readers.setdefault(base(t), set()).add(i)
    links: dict[int, _Link] = {}
    for i in range(len(calls) - 1):
        producer, consumer = calls[i], calls[i + 1]
        if "sim" not in producer or "sim" not in consumer or (only is not None
                                                              and (i, i + 1) not in only):
            continue
        out = base(producer["args"][-1])
        reads = tuple(t for t in consumer["args"][:-1] if base(t) == out)
        if tensors[out]["kind"] == "arena" and readers.get(out) == {i + 1} and reads:
            links[i] = _Link(out, reads, _nbytes(tensors[out]),
                             tuple(consumer["args"][:1]) == reads)
    limit = spec.sram.input_bytes
    working = [c.get("sim", {}).get("sram_input_bytes", limit) for c in calls]
    replanned: set[int] = set()
    if costs is not None:
        taken, plans = _search(costs, links, working, limit)
        for j, (knobs, need) in plans.items():
            if knobs != costs.knobs[j]:
                costs.overrides[costs.workloads[j]] = knobs
                working[j] = need
                replanned.add(j)
    else:
        taken = _greedy(links, working, limit, len(calls))
    held = [0] * len(calls)  # bytes held in input SRAM during each call
    cascades = []
    for i in sorted(taken):
        link, producer, consumer = links[i], calls[i], calls[i + 1]
        held[i] += link.bytes
        held[i + 1] += link.bytes
        producer.setdefault("resident", []).append(producer["args"][-1])
        consumer.setdefault("resident", []).extend(t for t in link.reads if t not in
                                                   consumer.get("resident", []))
        cascades.append(Cascade(
            _name(producer), _name(consumer), link.tensor, link.bytes,
            working[i + 1] + held[i + 1] + (links[i + 1].bytes if i + 1 in taken else 0),
            tuple(_name(calls[j]) for j in (i, i + 1) if j in replanned)
            if only is None else tuple(only[(i, i + 1)]), i))
    return cascades


def _greedy(links: dict[int, _Link], working: list[int], limit: int, n: int) -> set[int]:
    """In call order: each cascade that fits beside both calls' working sets and holdings."""
    held = [0] * n
    taken = set()
    for i, link in sorted(links.items()):
        if max(working[i] + held[i], working[i + 1] + held[i + 1]) + link.bytes <= limit:
            held[i] += link.bytes
            held[i + 1] += link.bytes
            taken.add(i)
    return taken


def _search(costs: CascadeCosts, links: dict[int, _Link], working: list[int], limit: int
            ) -> tuple[set[int], dict[int, tuple[dict[str, Any], int]]]:
    """The cascades and GEMM plans with the fewest measured cycles (see the module's doc):
    a dynamic program over the calls whose state is whether the call's input is held.
    Returns (producer indices taken, {GEMM call: (knobs, input SRAM bytes)})."""
    n = len(working)
    calls = Counter(costs.workloads.values())  # a kernel shared by calls keeps its plan
    measured = {i for i in costs.workloads if costs.options(i, (), limit, True)}

    def choices(i: int, held_in: bool, held_out: bool) -> list[tuple[float, Any]]:
        """(cycles, plan) of call i holding its input and/or output; [] if nothing fits."""
        room = limit - (links[i - 1].bytes if held_in else 0) - \
            (links[i].bytes if held_out else 0)
        if i not in measured:  # no records: its scheduled plan, when it fits (cycles unknown)
            return [(0.0, None)] if working[i] <= room else []
        roles = ({"input"} if held_in and links[i - 1].first_operand else set()) | \
            ({"output"} if held_out else set())
        return [(cost, (knobs, need)) for cost, knobs, need in
                costs.options(i, roles, room, calls[costs.workloads[i]] > 1)]

    # best[i][h]: (cycles, -cascades, taken, plans) of calls i.. given call i's input held (h)
    best: list[dict[bool, Any]] = [{} for _ in range(n + 1)]
    best[n] = {False: (0.0, 0, frozenset(), {}), True: None}
    for i in range(n - 1, -1, -1):
        for held_in in (False, True):
            if held_in and (i - 1) not in links:
                best[i][held_in] = None
                continue
            options = []
            for held_out in ((False, True) if i in links else (False,)):
                rest = best[i + 1][held_out]
                if rest is None:
                    continue
                for cost, choice in choices(i, held_in, held_out):
                    taken = rest[2] | ({i} if held_out else set())
                    plans = {**rest[3], **({i: choice} if choice is not None else {})}
                    options.append((cost + rest[0], rest[1] - held_out, taken, plans))
            best[i][held_in] = min(options, key=lambda o: (o[0], o[1])) if options else None
    top = best[0][False]
    return (set(top[2]), top[3]) if top is not None else (set(), {})


def _name(call: dict) -> str:
    return call["ops"][0] if call.get("ops") else call["kernel"]
