"""Structured pruning: remove whole channels, kept counts aligned to the NPU tile.

    config = PruneConfig(ratio=0.5, criterion="l1")
    compiled = lepton_compiler.build(model, example_inputs, target="lepton", prune=config)
    pruned = lepton_compiler.prune(model, example_inputs, config)   # module + report

(``prune`` is composed in ``lepton_compiler.pipeline``; this module is the stage.)

Channels are removed physically: weights, biases, batch-norm statistics and every shape
shrink, so the NPU never computes them. Channels that must go together (a conv, its
batch-norm and activation, the next layers' input channels; both operands of a residual add;
a depthwise conv's input and output; the feature blocks a flatten feeds to a linear layer)
form a *group*; each group is scored by the sum of its producers' per-channel weight norms
and keeps ``round((1 - ratio) * channels / align) * align`` channels (at least ``align``, at
most all of them; a group with no more than ``align`` channels, and every group at ratio 0, is
left whole). See ``passes/prune_channels.py`` for the analysis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lepton_compiler.errors import OptionError, PruneError
from lepton_compiler.passes.prune_channels import Analysis, analyze, rewrite

CRITERIA = ("l1", "l2")


@dataclass
class PruneConfig:
    """How much to prune and where.

    Parameters
    ----------
    ratio
        Fraction of each group's channels to remove, in ``[0, 1)``.
    criterion
        ``"l1"`` or ``"l2"``: the per-channel weight norm that scores importance.
    align
        Kept channel counts are multiples of this (default: the NPU spec's tile, 16).
    skip
        Layer names (``conv2d_0``, ``dense_1`` ... in graph order, as ``lepton inspect
        --ops`` shows them) whose groups are left whole.
    per_layer
        ``{layer name: ratio}``: a different ratio for the group containing that layer.
    """

    ratio: float = 0.5
    criterion: str = "l1"
    align: int | None = None
    skip: Sequence[str] = ()
    per_layer: Mapping[str, float] = field(default_factory=dict)


@dataclass
class GroupReport:
    """One dependency group: its layers and the effect of pruning it."""

    name: str
    layers: list[str]
    channels_before: int
    channels_after: int
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    pinned: str = ""


@dataclass
class PruneReport:
    """Per group and total channels, MACs and parameters before/after pruning."""

    ratio: float
    align: int
    groups: list[GroupReport]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    sim_cycles_before: int | None = None
    sim_cycles_after: int | None = None

    @property
    def mac_reduction(self) -> float:
        return 1 - self.macs_after / self.macs_before if self.macs_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mac_reduction": self.mac_reduction}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruneReport:
        """The report back from :meth:`to_dict` (e.g. ``build_info["pruning"]``)."""
        fields = {k: v for k, v in data.items() if k not in ("groups", "mac_reduction")}
        return cls(groups=[GroupReport(**g) for g in data["groups"]], **fields)

    def table(self) -> str:
        """A plain-text table: one row per group, then the totals."""
        lines = [f"{'group':<14}{'layers':>7}{'channels':>14}{'MACs before':>14}"
                 f"{'MACs after':>14}{'params before':>15}{'params after':>14}  note"]
        for g in self.groups:
            lines.append(f"{g.name:<14}{len(g.layers):>7}"
                         f"{f'{g.channels_before} -> {g.channels_after}':>14}"
                         f"{g.macs_before:>14,}{g.macs_after:>14,}{g.params_before:>15,}"
                         f"{g.params_after:>14,}  {g.pinned}")
        lines.append(f"{'total':<14}{'':>7}{'':>14}{self.macs_before:>14,}{self.macs_after:>14,}"
                     f"{self.params_before:>15,}{self.params_after:>14,}  "
                     f"MACs -{self.mac_reduction:.1%}")
        if self.sim_cycles_before is not None:
            lines.append(f"NPU sim cycles: {self.sim_cycles_before:,} -> "
                         f"{self.sim_cycles_after:,}")
        return "\n".join(lines)


@dataclass
class PruneResult:
    """The pruned Relax module, its report, and the kept channel indices per channel space
    (the producer order of ``passes.prune_channels.analyze``; absent: kept whole)."""

    module: Any
    report: PruneReport
    kept: dict[int, np.ndarray] = field(default_factory=dict)


def check_config(config: Any) -> PruneConfig:
    """Validate a PruneConfig (or a bare ratio), raising OptionError with the fix."""
    if isinstance(config, (int, float)) and not isinstance(config, bool):
        config = PruneConfig(ratio=float(config))
    if not isinstance(config, PruneConfig):
        raise OptionError(f"prune= takes a PruneConfig or a ratio, not {type(config).__name__}")
    for name, ratio in [("ratio", config.ratio), *[(f"per_layer[{k!r}]", v)
                                                    for k, v in config.per_layer.items()]]:
        if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
            raise OptionError(f"prune {name} must be in [0, 1) (the fraction of channels to "
                              f"remove), got {ratio!r}")
    if config.criterion not in CRITERIA:
        raise OptionError(f"unknown pruning criterion {config.criterion!r}; use one of "
                          f"{', '.join(CRITERIA)}")
    if config.align is not None and (not isinstance(config.align, int) or config.align < 1):
        raise OptionError(f"prune align must be a positive integer, got {config.align!r}")
    return config


def _norms(analysis: Analysis, criterion: str) -> dict[int, np.ndarray]:
    """Per space, the summed per-channel norm of its producers' weights."""
    from lepton_compiler import tvm_compat

    scores: dict[int, np.ndarray] = {}
    for m in analysis.members:
        if not m.producer:
            continue
        (space, n, _), = m.segs
        w = np.moveaxis(tvm_compat.constant_numpy(m.const), m.axis, 0).reshape(n, -1)
        norm = np.abs(w).sum(1) if criterion == "l1" else np.sqrt((w.astype(np.float64) ** 2)
                                                                  .sum(1))
        scores[space] = scores.get(space, 0) + norm
    return scores


def _kept_count(channels: int, ratio: float, align: int) -> int:
    if channels <= align or ratio == 0:
        return channels
    keep = round((1 - ratio) * channels / align) * align
    return min(max(keep, align), channels)


def _params(analysis: Analysis) -> dict[str, int]:
    """Weight elements of each producer layer."""
    from lepton_compiler import tvm_compat

    counts: dict[str, int] = {}
    for m in analysis.members:
        if m.producer:
            name = analysis.spaces[m.segs[0][0]].producer
            counts[name] = counts.get(name, 0) + int(np.prod(tvm_compat.shape_of(m.const.ty)))
    return counts


def prune_module(mod: Any, config: PruneConfig, align: int) -> PruneResult:
    """Prune an imported Relax module (constants bound, FoldConstant applied); kept channel
    counts are multiples of ``align`` (the NPU spec's ``matrix.tile_n``) unless
    ``config.align`` says otherwise."""
    from tvm import IRModule

    config = check_config(config)
    align = config.align or align
    func = mod["main"]
    a = analyze(func)
    names = set(a.layers)
    unknown = sorted((set(config.skip) | set(config.per_layer)) - names)
    if unknown:
        raise PruneError(f"pruning skip/per_layer name(s) {', '.join(unknown)} match no layer; "
                         f"the layers are {', '.join(a.layers) or 'none'}")
    groups = a.groups()
    prunable = [g for g in groups if not any(a.spaces[s].pinned for s in g)]
    if not prunable:
        raise PruneError("nothing to prune: the model has no conv2d or linear layer whose "
                         "output channels can be removed (outputs and unsupported ops pin them)")
    scores = _norms(a, config.criterion)
    keep: dict[int, np.ndarray] = {}
    plan: dict[int, tuple[int, int]] = {}
    for g in prunable:
        producers = [a.spaces[s].producer for s in g]
        if set(producers) & set(config.skip):
            continue
        ratios = [config.per_layer[p] for p in producers if p in config.per_layer]
        ratio = ratios[0] if ratios else config.ratio
        size = a.spaces[g[0]].size
        kept = _kept_count(size, ratio, align)
        plan[g[0]] = (size, kept)
        if kept == size:
            continue
        score = sum(scores.get(s, np.zeros(size)) for s in g)
        order = np.sort(np.argsort(-score, kind="stable")[:kept])
        keep.update({s: order for s in g})
    new_func = rewrite(func, a, keep) if keep else func
    new_mod = IRModule({"main": new_func})
    after = analyze(new_func)
    p_before, p_after = _params(a), _params(after)
    reports = []
    for g in groups:
        layers = [a.spaces[s].producer for s in g]
        size = a.spaces[g[0]].size
        pinned = next((a.spaces[s].pinned for s in g if a.spaces[s].pinned), "")
        reports.append(GroupReport(
            layers[0], layers, size, plan.get(g[0], (size, size))[1],
            sum(a.macs[n] for n in layers), sum(after.macs[n] for n in layers),
            sum(p_before.get(n, 0) for n in layers), sum(p_after.get(n, 0) for n in layers),
            f"pinned: {pinned}" if pinned else ("skipped" if set(layers) & set(config.skip)
                                                else "")))
    report = PruneReport(config.ratio, align, reports, sum(a.macs.values()),
                         sum(after.macs.values()), _const_elements(func),
                         _const_elements(new_func))
    return PruneResult(new_mod, report, keep)


def _const_elements(func: Any) -> int:
    from tvm import relax

    from lepton_compiler import tvm_compat

    seen: dict[Any, int] = {}

    def visit(expr: Any) -> None:
        if tvm_compat.is_tensor_constant(expr):
            seen[expr] = int(np.prod(tvm_compat.shape_of(expr.ty)))

    relax.analysis.post_order_visit(func.body, visit)
    return sum(seen.values())
