"""Per-layer accuracy analysis of int8 quantization (``analyze_quantization``,
``lepton quant-report``).

For every quantized layer (conv2d, dense, residual add) the output is compared with the
float model's on the analysis data, two ways:

- **network**: with the whole network quantized — the compiled int8 model, every layer's
  output dequantized and read out — so errors accumulated upstream count;
- **isolated**: with only that layer quantized — its float inputs quantized, the layer run
  in integers (numpy reference), its output dequantized — the layer's own error.

Figures: SQNR in dB (``10 log10(sum f^2 / sum (f - q)^2)``, higher is better) and cosine
similarity. Rows are sorted worst first (lowest network SQNR); a layer whose isolated SQNR is
low is itself hard to quantize (try ``overrides={layer: {"float": True}}`` or another
calibration method), one whose only network SQNR is low suffers from upstream error: the
"upstream dB" column (isolated minus network SQNR) is that cumulative loss, and the report
names the first layer, in execution order, where the whole-network SQNR falls by more than
6 dB below the layers before it — where compounding starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: A fall in whole-network SQNR this large (dB) marks where error starts compounding.
DROP_DB = 6.0


@dataclass
class _Acc:
    signal: float = 0.0
    noise: float = 0.0
    dot: float = 0.0
    norm_f: float = 0.0
    norm_q: float = 0.0

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        f = f.astype(np.float64).ravel()
        q = q.astype(np.float64).ravel()
        self.signal += float(f @ f)
        self.noise += float((f - q) @ (f - q))
        self.dot += float(f @ q)
        self.norm_f += float(f @ f)
        self.norm_q += float(q @ q)

    def sqnr(self) -> float:
        if self.noise == 0:
            return float("inf")
        if self.signal == 0:
            return float("-inf")
        return 10.0 * np.log10(self.signal / self.noise)

    def cosine(self) -> float:
        denom = np.sqrt(self.norm_f * self.norm_q)
        return float(self.dot / denom) if denom > 0 else (1.0 if self.noise == 0 else 0.0)


@dataclass
class LayerAccuracy:
    """One quantized layer's output fidelity vs float."""

    layer: str
    kind: str
    network_sqnr_db: float
    network_cosine: float
    isolated_sqnr_db: float
    isolated_cosine: float
    order: int = 0                 # position in execution order

    @property
    def upstream_db(self) -> float:
        """What error from earlier layers costs this one: isolated minus network SQNR (the
        cumulative loss; it grows layer by layer where error compounds)."""
        return self.isolated_sqnr_db - self.network_sqnr_db


@dataclass
class QuantReport:
    """The per-layer analysis; ``str()`` is the table, ``plot(path)`` the PNG chart."""

    method: str
    samples: int
    layers: list[LayerAccuracy]
    output_sqnr_db: float
    output_cosine: float
    top1_agreement: float | None
    float_layers: dict[str, str] = field(default_factory=dict)
    # The first layer, in execution order, whose whole-network SQNR falls more than
    # DROP_DB below the best of the layers before it: where compounding error starts.
    first_drop: str | None = None

    def table(self) -> str:
        lines = [f"int8 quantization report ({self.method} calibration, {self.samples} "
                 "analysis samples), worst layer first",
                 f"{'layer':<16} {'kind':<8} {'SQNR dB':>9} {'cosine':>9} "
                 f"{'alone dB':>9} {'alone cos':>9} {'upstream dB':>11}"]
        for r in self.layers:
            lines.append(f"{r.layer:<16} {r.kind:<8} {r.network_sqnr_db:>9.2f} "
                         f"{r.network_cosine:>9.5f} {r.isolated_sqnr_db:>9.2f} "
                         f"{r.isolated_cosine:>9.5f} {r.upstream_db:>11.2f}")
        if self.first_drop is not None:
            lines.append(f"whole-network SQNR first drops by more than {DROP_DB:g} dB at "
                         f"{self.first_drop} (error compounding from there on: see its "
                         "inputs)")
        lines.append(f"model output: SQNR {self.output_sqnr_db:.2f} dB, cosine "
                     f"{self.output_cosine:.5f}"
                     + (f", top-1 agreement {self.top1_agreement:.1%}"
                        if self.top1_agreement is not None else ""))
        for name, reason in self.float_layers.items():
            lines.append(f"float: {name}: {reason}")
        return "\n".join(lines)

    __str__ = table

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=float)

    def plot(self, path: str | os.PathLike) -> Path:
        """Write a PNG bar chart of per-layer SQNR (network and isolated)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        names = [r.layer for r in self.layers]
        cap = 80.0  # an exact layer has infinite SQNR: draw it at the cap

        def clip(v: float) -> float:
            return float(np.clip(v, -10.0, cap))

        y = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.5))
        ax.barh(y - 0.2, [clip(r.network_sqnr_db) for r in self.layers], 0.4,
                label="whole network int8")
        ax.barh(y + 0.2, [clip(r.isolated_sqnr_db) for r in self.layers], 0.4,
                label="only this layer int8")
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("SQNR vs float (dB, higher is better)")
        ax.set_title(f"Per-layer int8 fidelity ({self.method} calibration)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def analyze(mod: Any, graph: Any, table: Any, qg: Any, samples: list[dict[str, np.ndarray]],
            executor: Any) -> QuantReport:
    """The per-layer analysis (see the module docstring) of the calibrated ``graph`` of
    ``mod`` with integer plan ``qg``, over ``samples``; ``executor`` compiles and runs the
    float and int8 analysis models (``(module, input names, output names) -> callable``).
    ``lepton_compiler.analyze_quantization`` composes the stages that lead here."""
    from lepton_compiler.optimize import quantization
    from lepton_compiler.passes.layers import compute_kinds
    from lepton_compiler.passes.quantize import emit, run_layer
    from lepton_compiler.target import reference as ref

    layers = [lay for lay in graph.layers
              if lay.name in qg.quantized and lay.kind in compute_kinds()]
    keep = [lay.output for lay in layers]
    observed = quantization.observed_tensors(graph)
    float_model = quantization.observer_model(mod, graph, observed, executor)
    int8_model = executor(emit(qg, keep), list(graph.inputs), [*graph.outputs, *keep])

    net = {lay.name: _Acc() for lay in layers}
    alone = {lay.name: _Acc() for lay in layers}
    out_acc = _Acc()
    agree, total = 0, 0
    n_out = len(graph.outputs)
    for s in samples:
        f_outs = float_model(s)
        f_outs = f_outs if isinstance(f_outs, tuple) else (f_outs,)
        fv = {**s, **dict(zip(observed, f_outs, strict=True))}
        q_outs = int8_model(s)
        q_outs = q_outs if isinstance(q_outs, tuple) else (q_outs,)
        for lay, q in zip(layers, q_outs[n_out:], strict=True):
            net[lay.name].add(fv[lay.output], q)
            args = [ref.quantize(fv[t], qg.tensors[t].scale, qg.tensors[t].zero_point)
                    for t in lay.inputs]
            out_q = run_layer(lay, qg.params[lay.name], args,
                              graph.tensors[lay.output].shape)
            p = qg.tensors[lay.output]
            alone[lay.name].add(fv[lay.output], ref.dequantize(out_q, p.scale, p.zero_point))
        first_f, first_q = fv[graph.outputs[0]], q_outs[0]
        out_acc.add(first_f, first_q)
        if first_f.ndim == 2 and first_f.shape[1] > 1:
            agree += int((first_f.argmax(1) == first_q.argmax(1)).sum())
            total += first_f.shape[0]
    rows = [LayerAccuracy(lay.name, lay.kind, net[lay.name].sqnr(), net[lay.name].cosine(),
                          alone[lay.name].sqnr(), alone[lay.name].cosine(), i)
            for i, lay in enumerate(layers)]
    first_drop, best = None, -np.inf
    for r in rows:  # execution order
        if r.network_sqnr_db < best - DROP_DB:
            first_drop = r.layer
            break
        best = max(best, min(r.network_sqnr_db, 1e9))
    rows.sort(key=lambda r: (r.network_sqnr_db, r.layer))
    return QuantReport(table.method, len(samples), rows, out_acc.sqnr(), out_acc.cosine(),
                       agree / total if total else None, dict(qg.float_layers), first_drop)

