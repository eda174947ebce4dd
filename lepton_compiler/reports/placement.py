"""Where every layer runs, what it is fused with, and why: the placement report.

``build(..., target="lepton")`` attaches one to the compiled model (``compiled.report``, also
kept in the artifact's manifest for ``lepton inspect --ops``); :func:`check` produces the same
report before compiling anything (``lepton check``). Per layer: NPU or host, the ops fused
into it, the reason for every host fallback (the failing offload rule's text, see
``target/npu_constraints.py``), and for each fallback its estimated cost — host time from
its MACs and bytes, and the bytes it moves across the NPU/host boundary. Summary: the share
of MACs on the NPU and the kernel count before/after fusion. Exports: JSON, DOT and SVG.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lepton_compiler.passes.layers import kind_of

COLORS = {"npu": "#4c9f38", "host": "#d9822b", "unsupported": "#c0392b"}


@dataclass
class OpPlacement:
    """One layer's placement."""

    layer: str
    op: str
    kind: str
    unit: str                      # "npu" | "host"
    dtype: str                     # "int8" | "float32" | ...
    fused: list[str]
    reason: str
    macs: int
    output_shape: list[int]
    inputs: list[str]
    host_ms_estimate: float = 0.0
    boundary_bytes: int = 0


@dataclass
class PlacementReport:
    """The placement of every layer of a model (see the module docstring)."""

    target: str
    spec: str | None
    ops: list[OpPlacement]
    relax_ops_before_fusion: int
    kernels_after_fusion: int | None = None
    unsupported: dict[str, list[str]] = field(default_factory=dict)
    #: Why, for unsupported ops that are supported in general but not as used here.
    unsupported_reasons: dict[str, str] = field(default_factory=dict)
    #: Activations kept in SRAM between two NPU layers (``lower/cascade.Cascade`` as dicts).
    cascades: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return sum(o.macs for o in self.ops)

    @property
    def npu_mac_share(self) -> float:
        total = self.total_macs
        return sum(o.macs for o in self.ops if o.unit == "npu") / total if total else 0.0

    def fallbacks(self) -> list[OpPlacement]:
        return [o for o in self.ops if o.unit != "npu"]

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target, "spec": self.spec, "layers": len(self.ops),
            "npu_layers": sum(o.unit == "npu" for o in self.ops),
            "host_layers": sum(o.unit == "host" for o in self.ops),
            "total_macs": self.total_macs, "npu_mac_share": self.npu_mac_share,
            "relax_ops_before_fusion": self.relax_ops_before_fusion,
            "kernels_after_fusion": self.kernels_after_fusion,
            "unsupported_ops": {op: len(nodes) for op, nodes in self.unsupported.items()},
            "cascades": len(self.cascades),
            "cascaded_bytes": sum(c["bytes"] for c in self.cascades),
        }

    def table(self) -> str:
        s = self.summary()
        kernels = (f", {s['kernels_after_fusion']} kernels after fusion"
                   if s["kernels_after_fusion"] is not None else "")
        lines = [f"placement on {self.target}"
                 + (f" ({self.spec})" if self.spec else "")
                 + f": {s['npu_layers']} layers on the NPU, {s['host_layers']} on the host; "
                 f"{s['npu_mac_share']:.1%} of {s['total_macs'] / 1e6:.1f} M MACs on the NPU; "
                 f"{s['relax_ops_before_fusion']} Relax ops before fusion{kernels}",
                 f"{'layer':<20} {'unit':<5} {'dtype':<8} {'MACs':>12}  fused with / reason"]
        for o in self.ops:
            detail = " + ".join(o.fused) if o.fused else ""
            if o.unit != "npu":
                cost = f" [~{o.host_ms_estimate:.3f} ms host, {o.boundary_bytes} B across]"
                detail = (detail + "; " if detail else "") + o.reason + cost
            lines.append(f"{o.layer:<20} {o.unit:<5} {o.dtype:<8} {o.macs:>12}  {detail}")
        for c in self.cascades:
            replanned = c.get("replanned") or ()
            lines.append(f"cascade {c['producer']} -> {c['consumer']}: {c['bytes']} B kept in "
                         f"SRAM ({c['sram_input_bytes']} B of input SRAM in use"
                         + (f"; replanned {', '.join(replanned)} from tuning records"
                            if replanned else "") + ")")
        for op, nodes in self.unsupported.items():
            why = self.unsupported_reasons.get(op)
            lines.append(f"unsupported {op}: {', '.join(nodes)}" + (f" ({why})" if why else ""))
        return "\n".join(lines)

    __str__ = table

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "ops": [asdict(o) for o in self.ops],
                "unsupported": self.unsupported,
                "unsupported_reasons": self.unsupported_reasons, "cascades": self.cascades}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PlacementReport:
        s = raw["summary"]
        return cls(s["target"], s.get("spec"), [OpPlacement(**o) for o in raw["ops"]],
                   s["relax_ops_before_fusion"], s.get("kernels_after_fusion"),
                   dict(raw.get("unsupported", {})), dict(raw.get("unsupported_reasons", {})),
                   list(raw.get("cascades", [])))

    def to_dot(self) -> str:
        """The layer graph in Graphviz DOT, nodes coloured by placement."""
        lines = ["digraph lepton {", "  rankdir=TB;",
                 '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
        producers = {o.layer for o in self.ops}
        for o in self.ops:
            label = f"{o.layer}\\n{o.op.removeprefix('relax.')} [{o.unit}, {o.dtype}]"
            lines.append(f'  "{o.layer}" [label="{label}", fillcolor="{COLORS[o.unit]}"];')
        for o in self.ops:
            for src in o.inputs:
                if src not in producers:
                    lines.append(f'  "{src}" [shape=ellipse, fillcolor="#dddddd"];')
                    producers.add(src)
                lines.append(f'  "{src}" -> "{o.layer}";')
        lines.append("}")
        return "\n".join(lines)

    def to_svg(self) -> str:
        """A standalone SVG of the layer graph (one row per layer, edges on the left)."""
        row, width = 28, 760
        index = {o.layer: i for i, o in enumerate(self.ops)}
        height = row * len(self.ops) + 40
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                 'font-family="Helvetica" font-size="12">',
                 f'<text x="10" y="18">{html.escape(self.table().splitlines()[0])}</text>']
        for i, o in enumerate(self.ops):
            y = 30 + i * row
            for src in o.inputs:
                if src in index:
                    j = index[src]
                    x = 60 - 6 * ((i - j) % 8)
                    y0 = 30 + j * row + row // 2 - 2
                    parts.append(f'<path d="M 70 {y0} H {x} V {y + row // 2 - 2} H 70" '
                                 'fill="none" stroke="#888"/>')
            parts.append(f'<rect x="70" y="{y}" width="660" height="{row - 4}" rx="4" '
                         f'fill="{COLORS[o.unit]}"/>')
            text = f"{o.layer}: {o.op.removeprefix('relax.')} [{o.unit}, {o.dtype}]"
            if o.fused:
                text += " + " + " + ".join(o.fused)
            parts.append(f'<text x="78" y="{y + 16}" fill="white">{html.escape(text)}</text>')
        parts.append("</svg>")
        return "\n".join(parts)


def layer_macs(layer: Any, graph: Any) -> int:
    """Multiply-accumulates of a layer: its kind's count; for a float layer, that of a
    float convolution or matrix product (0 otherwise)."""
    kind = kind_of(layer.kind)
    if kind is not None:
        return kind.macs(layer, graph)
    out = graph.tensors[layer.output].shape
    if layer.op == "relax.matmul" and len(layer.inputs) == 2:
        return int(np.prod(out)) * graph.tensors[layer.inputs[0]].shape[-1]
    if layer.op == "relax.nn.conv2d":
        w = tuple(int(d) for d in layer.expr.args[1].ty.shape)  # HWIO after layout
        return int(np.prod(out)) * w[0] * w[1] * w[2]
    return 0


def _fused(layer: Any, int8: bool) -> list[str]:
    kind = kind_of(layer.kind)
    names = []
    for _, value in layer.bindings[1:]:
        op = str(getattr(value.op, "name", "")).removeprefix("relax.")
        names.append("bias add" if op == "add" and kind is not None and kind.absorbs_bias
                     else "relu6" if op == "clip" else op)
    if int8 and kind is not None and kind.compute:
        names.append("requantize")
    return names


def _where(layer: Any, facts: Any, spec: Any) -> Any:
    """The first failing offload rule of the layer's kind (no rules: not a matrix product)."""
    from lepton_compiler.target.npu_constraints import apply, matrix_products_only

    kind = kind_of(layer.kind)
    return apply(kind.npu_rules if kind is not None and kind.npu_rules
                 else (matrix_products_only,), facts, spec)


def place(graph: Any, quantized: set[str], spec: Any, host: Any, fused: bool = True
          ) -> list[OpPlacement]:
    """Stage ``partition``: placement of every layer of ``graph`` (``quantized``: layers that
    run in int8; ``spec``: the NPU spec, or None for the host target; ``host``: the
    :class:`~lepton_compiler.target.host_schedule.HostThroughput` that prices a host
    fallback; ``fused=False``: no layer on the NPU, which runs fused composites only)."""
    from lepton_compiler.target.npu_constraints import OpFacts

    ops: list[OpPlacement] = []
    unit_of: dict[str, str] = {}
    for layer in graph.layers:
        int8 = layer.name in quantized
        out = graph.tensors[layer.output]
        dtype = "int8" if int8 else out.dtype
        groups = int(layer.attrs.get("groups", 1))
        cin = layer.weight.shape[-2] * groups if layer.kind == "conv2d" else 0
        kind = kind_of(layer.kind)
        facts = OpFacts(layer.name, layer.kind, layer.op, dtype, cin,
                        layer.weight.shape[-1] if layer.weight is not None else 0, groups,
                        kind.gemm(layer, graph) if kind is not None else None,
                        kind.vector_work(layer, graph) if kind is not None and int8 else None)
        if spec is None:
            unit, reason = "host", "target is the host CPU"
        elif not fused and _where(layer, facts, spec).on_npu:
            unit, reason = "host", (f"{layer.name}: built with fuse=False; the NPU runs the "
                                    "fused composites only")
        else:
            where = _where(layer, facts, spec)
            unit, reason = ("npu", "") if where.on_npu else ("host", where.reason)
        unit_of[layer.output] = unit
        ops.append(OpPlacement(layer.name, layer.op, layer.kind, unit, dtype,
                               _fused(layer, int8), reason, layer_macs(layer, graph),
                               list(out.shape), list(layer.inputs)))
    consumers: dict[str, list[str]] = {}
    for layer in graph.layers:
        for t in layer.inputs:
            consumers.setdefault(t, []).append(layer.name)
    units = {o.layer: o.unit for o in ops}
    for o, layer in zip(ops, graph.layers, strict=True):
        if o.unit == "npu":
            continue
        moved = 0
        for t in layer.inputs:
            if unit_of.get(t) == "npu":
                moved += _nbytes(graph.tensors[t])
        if any(units.get(c) == "npu" for c in consumers.get(layer.output, [])):
            moved += _nbytes(graph.tensors[layer.output])
        o.boundary_bytes = moved
        traffic = sum(_nbytes(graph.tensors[t]) for t in layer.inputs
                      if graph.tensors[t].dtype != "tuple")
        o.host_ms_estimate = 1e3 * (o.macs / host.macs_per_s
                                    + (traffic + _nbytes(graph.tensors[layer.output]))
                                    / host.bytes_per_s)
    return ops


def _nbytes(tensor: Any) -> int:
    if tensor.dtype == "tuple":
        return 0
    size = {"int8": 1, "uint8": 1, "bool": 1, "float16": 2, "int64": 8, "float64": 8}.get(
        tensor.dtype, 4)
    return int(np.prod(tensor.shape)) * size


def relax_op_count(mod: Any) -> int:
    """Operator calls in ``main`` (before fusion)."""
    import tvm
    from tvm import relax

    count = [0]

    def visit(e: Any) -> None:
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            count[0] += 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return count[0]


def would_quantize(graph: Any) -> set[str]:
    """The layers an int8 build would quantize (decided without calibration data)."""
    from lepton_compiler.passes.quantize import plan_quantization

    ranges = {name: (-1.0, 1.0) for name in graph.tensors}
    return plan_quantization(graph, ranges, set()).quantized
