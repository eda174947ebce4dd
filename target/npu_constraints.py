"""Offload constraints: which operators the Lepton NPU runs, and why the others fall back.

Each rule is a small function whose docstring is the user-facing rule; a failing rule returns
the specific reason (naming the op and the offending dtype or shape) and the op runs on the
host inside the same artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lepton_compiler.target.spec import LeptonSpec


@dataclass(frozen=True)
class Placement:
    """Where an operator runs, and the reason when it is the host."""

    on_npu: bool
    reason: str = ""


@dataclass(frozen=True)
class Conv2dOp:
    """The facts about a conv2d that the rules look at."""

    name: str
    dtype: str
    cin: int
    cout: int
    groups: int


def int8_operands(op: Conv2dOp, spec: LeptonSpec) -> str | None:
    """The matrix engine multiplies int8 operands; float tensors run on the host."""
    if op.dtype != spec.matrix.input_dtype:
        return (f"{op.name}: {op.dtype} operands — the matrix engine computes "
                f"{spec.matrix.input_dtype} x {spec.matrix.weight_dtype}; quantize the model")
    return None


def dense_groups(op: Conv2dOp, spec: LeptonSpec) -> str | None:
    """Grouped and depthwise convolutions run on the host: the engine reduces over tile_k
    input channels at once, and with one input channel per group it would idle at
    1/tile_k utilisation."""
    if op.groups != 1:
        kind = "depthwise" if op.groups == op.cin == op.cout else "grouped"
        return (f"{op.name}: {kind} conv2d (groups={op.groups}, {op.cin} -> {op.cout} "
                f"channels) reduces over {op.cin // op.groups} input channel(s) per output; the "
                f"engine's {spec.matrix.tile_k}-deep reduction would be "
                f"{op.cin // op.groups}/{spec.matrix.tile_k} utilised, so it runs on the host")
    return None


@dataclass(frozen=True)
class OpFacts:
    """The facts about any layer that the rules look at (a superset of ``Conv2dOp``)."""

    name: str
    kind: str                     # conv2d | dense | add | max_pool2d | ... | float
    op: str                       # the Relax op, e.g. relax.nn.conv2d
    dtype: str                    # int8 when the layer is quantized
    cin: int = 0
    cout: int = 0
    groups: int = 1
    gemm: tuple[int, int, int] | None = None  # (M, N, K) of a matrix product


def fits_sram(op: OpFacts, spec: LeptonSpec) -> str | None:
    """A matrix product runs on the NPU when one output tile's working set (a row strip of
    the input, a column strip of the weights, the int32 accumulators) fits the SRAM."""
    from lepton_compiler.target.npu_schedule import SramOverflowError, plan_gemm

    if op.gemm is None:
        return None
    try:
        plan_gemm(*op.gemm, spec)
    except SramOverflowError as err:
        return f"{op.name}: {err}"
    return None


def matrix_products_only(op: OpFacts, spec: LeptonSpec) -> str | None:
    """The NPU runs convolutions and matrix products, with their bias, requantization and
    ReLU/ReLU6 fused into the same kernel; elementwise, pooling, reduction, layout and
    float <-> int8 conversion kernels run on the host CPU in the same artifact."""
    if op.gemm is None:
        what = "float32" if op.dtype != "int8" else "int8"
        return (f"{op.name}: {op.op.removeprefix('relax.')} ({what}) is not a matrix product; "
                "it runs on the host CPU")
    return None


CONV2D_RULES: tuple[Callable[[Conv2dOp, LeptonSpec], str | None], ...] = (
    int8_operands,
    dense_groups,
)

#: Every rule, in the order they are applied, for any layer.
RULES: tuple[Callable[[OpFacts, LeptonSpec], str | None], ...] = (
    matrix_products_only,
    int8_operands,
    dense_groups,
    fits_sram,
)


def apply(rules: tuple, op: Any, spec: LeptonSpec) -> Placement:
    """The first failing rule gives the host-fallback reason; none failing: the NPU."""
    for rule in rules:
        reason = rule(op, spec)
        if reason is not None:
            return Placement(False, reason)
    return Placement(True)


def placement(op: OpFacts, spec: LeptonSpec) -> Placement:
    """Apply every rule to any layer."""
    return apply(RULES, op, spec)


def conv2d_placement(op: Conv2dOp, spec: LeptonSpec) -> Placement:
    """Apply every conv2d rule."""
    return apply(CONV2D_RULES, op, spec)
