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


def int8_operands(op: OpFacts, spec: LeptonSpec) -> str | None:
    """The NPU's matrix engine and vector unit compute on int8 operands; float tensors run on
    the host."""
    if op.dtype != spec.matrix.input_dtype:
        return (f"{op.name}: {op.dtype} operands — the matrix engine computes "
                f"{spec.matrix.input_dtype} x {spec.matrix.weight_dtype} (the vector unit int8 "
                "layers); quantize the model")
    return None


@dataclass(frozen=True)
class OpFacts:
    """The facts about a layer that the rules look at."""

    name: str
    kind: str                     # conv2d | dense | add | max_pool2d | ... | float
    op: str                       # the Relax op, e.g. relax.nn.conv2d
    dtype: str                    # int8 when the layer is quantized
    cin: int = 0
    cout: int = 0
    groups: int = 1
    gemm: tuple[int, int, int] | None = None  # (M, N, K) of a matrix product
    vector: Any = None  # the layer's work on the vector unit (npu_vector.VectorWork), if any


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
    """The NPU runs convolutions and matrix products on its matrix engine (bias,
    requantization and ReLU/ReLU6 fused), and int8 depthwise/grouped convolutions, max
    pooling, means, residual adds and clamps on its vector unit; other kernels (layout,
    float <-> int8 conversion, float ops) run on the host CPU in the same artifact."""
    if op.gemm is None:
        what = "float32" if op.dtype != "int8" else "int8"
        return (f"{op.name}: {op.op.removeprefix('relax.')} ({what}) has no NPU kernel (not "
                "a matrix product nor a vector-unit layer); it runs on the host CPU")
    return None


def fits_vector_unit(op: OpFacts, spec: LeptonSpec) -> str | None:
    """An int8 depthwise/grouped conv2d, max pooling, mean, residual add or clamp runs on the
    vector unit when one band of its input (a row of pixels for the channels of one block of
    lanes, its weights) fits the SRAM; a mean only over adjacent axes."""
    from lepton_compiler.target.npu_schedule import SramOverflowError
    from lepton_compiler.target.npu_vector import plan_vector

    if op.vector is None:
        return (f"{op.name}: {op.op.removeprefix('relax.')} has no vector-unit form here "
                "(e.g. a mean over non-adjacent axes); it runs on the host CPU")
    try:
        plan_vector(op.vector, spec)
    except SramOverflowError as err:
        return f"{op.name}: {err}; it runs on the host CPU"
    return None


def conv_engine(op: OpFacts, spec: LeptonSpec) -> str | None:
    """A conv2d with groups = 1 runs on the matrix engine when its tiles fit the SRAM
    (:func:`fits_sram`); a depthwise or grouped conv2d, which reduces over few input channels
    per output, runs on the vector unit (:func:`fits_vector_unit`)."""
    return fits_sram(op, spec) if op.groups == 1 else fits_vector_unit(op, spec)


#: The offload rules of a layer on the vector unit.
VECTOR_RULES = (int8_operands, fits_vector_unit)


#: Every rule of a matrix product, in the order they are applied.
RULES: tuple[Callable[[OpFacts, LeptonSpec], str | None], ...] = (
    matrix_products_only,
    int8_operands,
    conv_engine,
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
