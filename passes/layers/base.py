"""What every int8 layer kind shares: the layer graph's data types, quantization parameters,
the fixed-point helpers, and the :class:`LayerKind` interface a kind module implements.

A kind module (one file in this package) defines one or more :class:`LayerKind` subclasses
and lists instances in a module-level ``KINDS``; the package discovers them. A kind owns:

- its **pattern**: the Relax ops that start it (``ops``) and :meth:`LayerKind.match`;
- its **typed parameters** (a frozen dataclass) from :meth:`LayerKind.params`;
- its **integer reference** in numpy, :meth:`LayerKind.reference`;
- its **emitters**, fused and unfused (:meth:`LayerKind.emit`, :meth:`LayerKind.emit_unfused`);
- its **MAC count** and GEMM extents, and its **offload rules** (``npu_rules``: rules of
  ``target/npu_constraints.py``; none means it runs on the host);
- its row of ``docs/SUPPORTED_OPS.md`` (``pattern``, ``int8_kernel``, ``runs_on``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lepton_compiler import tvm_compat
from lepton_compiler.errors import QuantizationError


@dataclass
class Tensor:
    """A tensor of the layer graph."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class Layer:
    """One layer: its kind, inputs/output tensor names and what the rewrite needs."""

    name: str
    kind: str
    inputs: list[str]
    output: str
    op: str = ""                    # the Relax op it came from
    attrs: dict[str, Any] = field(default_factory=dict)
    weight: np.ndarray | None = None  # conv2d: HWIO; dense: [K, N]
    bias: np.ndarray | None = None
    act: str | None = None          # "relu" | "relu6" folded into the clamp
    expr: Any = None                # the Relax expression of the first binding
    bindings: list[tuple[Any, Any]] = field(default_factory=list)  # (var, value), in order
    reason: str = ""                # float layers: why they are not quantized


@dataclass
class LayerGraph:
    """Layers in execution order over named tensors."""

    inputs: list[str]
    outputs: list[str]
    tuple_output: bool
    tensors: dict[str, Tensor]
    layers: list[Layer]
    params: list[Any]               # the Relax parameters of main
    var_names: dict[Any, str] = field(default_factory=dict)  # Relax var -> tensor name
    # Functions of the module besides main (PrimFuncs an importer emitted call_tir to, e.g.
    # ONNX Clip); a module rebuilt from the graph must keep them.
    helpers: dict[Any, Any] = field(default_factory=dict)
    # Pre-quantized models: tensor -> the int8 quantization its QuantizeLinear/
    # DequantizeLinear pair gives it (see qgraph.read_graph).
    fixed: dict[str, QParams] = field(default_factory=dict)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def producer(self, tensor: str) -> Layer | None:
        for layer in self.layers:
            if layer.output == tensor:
                return layer
        return None

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.tensors[tensor].shape


@dataclass(frozen=True)
class QParams:
    """An int8 tensor's real value is ``scale * (q - zero_point)``.

    ``scale`` is one number, or a tuple of one per channel (the last axis) for the output of
    a GEMM layer that only float layers read (see ``passes/quantize.py``)."""

    scale: float | tuple[float, ...]
    zero_point: int

    @property
    def per_channel(self) -> bool:
        return isinstance(self.scale, tuple)


@dataclass(frozen=True)
class ClampParams:
    """An int8 clamp to ``[lo, hi]`` (ReLU, ReLU6 or clip in the input's quantization)."""

    lo: int
    hi: int


# --- fixed-point helpers ---------------------------------------------------------------------

def quantize_weights(weight: np.ndarray, per_channel: bool = True,
                     min_scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights over the last axis (output channel): ``(w_q, scale)``.

    An all-zero channel gets scale ``1/127`` (any finite value represents zeros exactly).
    ``min_scale`` (per channel) raises a channel's scale where a finer one would not do, e.g.
    where the int32 bias would overflow (see :func:`bias_safe_scale`).
    """
    w = np.asarray(weight, np.float64)
    axes = tuple(range(w.ndim - 1))
    peak = np.abs(w).max(axis=axes) if per_channel else np.full(w.shape[-1], np.abs(w).max())
    if not np.all(np.isfinite(peak)):
        raise QuantizationError("weights contain NaN or Inf; they cannot be quantized")
    scale = np.where(peak > 0, peak / 127.0, 1.0 / 127.0)
    if min_scale is not None:
        scale = np.maximum(scale, min_scale)
    scale = scale.astype(np.float32).astype(np.float64)
    w_q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return w_q, scale


#: The largest int32 bias a GEMM layer gets: 2^30 leaves the other half of the int32 range
#: to the input zero point's correction and the products.
BIAS_LIMIT = 2.0 ** 30


def bias_safe_scale(bias: np.ndarray, input_scale: float) -> np.ndarray:
    """The smallest weight scale per channel at which ``bias / (input_scale * w_scale)``
    fits in :data:`BIAS_LIMIT`.

    A channel whose weights are all but zero (a pruned or dead channel of a pretrained
    network, after batch-norm folding) but whose bias is not would otherwise get a tiny
    weight scale and an int32 bias that saturates: its output would be wrong by the whole
    bias. At this scale its weights round to (nearly) zero, an error bounded by half the scale,
    and the bias stays exact (onnxruntime's quantizer makes the same adjustment).
    """
    return np.abs(np.asarray(bias, np.float64)) / (float(input_scale) * BIAS_LIMIT)


def fixed_point(real: float) -> tuple[int, int]:
    """(multiplier, shift) for requantization by ``real``; tiny scales flush to zero."""
    from lepton_compiler.target.reference import quantize_multiplier

    if real < 2.0 ** -32:
        return 0, 1
    if real >= 2.0 ** 30:
        raise QuantizationError(f"requantization scale {real:g} is too large for int32 "
                                "arithmetic; check the calibration ranges")
    return quantize_multiplier(real)


def rescale_params(real: float) -> tuple[int, int]:
    """(multiplier, shift) for an int8 -> int8 rescale by ``real`` (an input scale over an
    output scale): ``multiplier / 2**shift ~= real`` with 30 bits of precision."""
    exponent = int(np.frexp(real)[1])
    if 30 - exponent < 1:
        raise QuantizationError(f"input/output scale ratio {real:g} is too large")
    shift = int(np.clip(30 - exponent, 1, 62))
    return round(real * 2**shift), shift


def clamp_bounds(act: str | None, out: QParams) -> tuple[int, int]:
    """The int8 clamp that carries a fused ReLU/ReLU6 in ``out``'s quantization."""
    lo, hi = -128, 127
    if act in ("relu", "relu6"):
        lo = max(lo, out.zero_point)
    if act == "relu6":
        if out.per_channel:
            raise QuantizationError("a ReLU6 clamp needs one output scale")
        hi = min(hi, out.zero_point + int(np.floor(6.0 / out.scale + 0.5)))
    return lo, hi


# --- matching --------------------------------------------------------------------------------

@dataclass
class MatchContext:
    """What a kind's matcher may look at: the tensor names of Relax vars and their types."""

    names: dict[Any, str]
    tensors: dict[str, Tensor]

    def var_input(self, expr: Any) -> str | None:
        """The tensor name of ``expr`` when it is a variable of the graph."""
        from tvm import relax

        return self.names.get(expr) if isinstance(expr, relax.Var) else None

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.tensors[tensor].shape


def is_const(expr: Any) -> bool:
    return tvm_compat.is_constant(expr)


def const(expr: Any) -> np.ndarray:
    return tvm_compat.constant_numpy(expr)


def ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def prim(expr: Any) -> float | None:
    """A scalar PrimValue's number, or None."""
    value = getattr(expr, "value", None)
    if value is None:
        return None
    inner = getattr(value, "value", value)
    try:
        return float(inner)
    except (TypeError, ValueError):
        return None


def padding4(values: Any) -> tuple[int, ...]:
    """Padding as (top, left, bottom, right)."""
    pad = ints(values)
    return (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else pad


# --- emission --------------------------------------------------------------------------------

@dataclass
class EmitContext:
    """What a kind's emitter uses: the block builder, the graph, and ``call`` that adds an
    integer kernel and binds its call (named after the layer, for the reports)."""

    bb: Any
    graph: LayerGraph
    call: Callable[[Any, str, list[Any], tuple[int, ...], str], Any]

    def reshape(self, value: Any, shape: Any) -> Any:
        from tvm import relax

        return self.bb.emit(relax.op.reshape(value, [int(d) for d in shape]))


# --- the interface ---------------------------------------------------------------------------

class LayerKind:
    """One int8 layer kind (see the module docstring). Subclasses set the class attributes
    and override what applies."""

    name: ClassVar[str]
    ops: ClassVar[tuple[str, ...]]        # Relax ops that start a layer of this kind
    priority: ClassVar[int] = 100         # among kinds sharing an op, lower matches first
    compute: ClassVar[bool] = False       # its output gets its own calibrated range
    follows: ClassVar[bool] = False       # int8 only when its input already is
    absorbs_bias: ClassVar[bool] = False  # a following constant bias add joins the layer
    absorbs_act: ClassVar[bool] = False   # a following ReLU/ReLU6 joins the layer
    npu_rules: ClassVar[tuple[Any, ...]] = ()  # offload rules; () = runs on the host
    pattern: ClassVar[str] = ""           # SUPPORTED_OPS: the Relax ops it covers
    int8_kernel: ClassVar[str] = ""       # SUPPORTED_OPS: what the integer kernel does
    runs_on: ClassVar[str] = "host"       # SUPPORTED_OPS: where it runs

    def match(self, call: Any, op: str, ctx: MatchContext) -> Layer | None:
        """The layer ``call`` (a Relax call of one of ``ops``) starts, or None."""
        raise NotImplementedError

    def params(self, layer: Layer, ins: list[QParams], out: QParams,
               per_channel: bool) -> Any:
        """The layer's integer parameters (a frozen dataclass, or None)."""
        return None

    def output_qparams(self, layer: Layer, ins: list[QParams],
                       ranges: dict[str, tuple[float, float]]) -> QParams | None:
        """The output's quantization when the kind has no range of its own (``compute`` is
        False): by default the input's (pooling and layout keep the input's scale)."""
        return ins[0]

    def reference(self, layer: Layer, params: Any, args: list[np.ndarray],
                  out_shape: tuple[int, ...]) -> np.ndarray:
        """The layer on int8 arrays in numpy: the integer semantics, bit for bit."""
        raise NotImplementedError

    def emit(self, ctx: EmitContext, layer: Layer, params: Any, args: list[Any],
             on_npu: bool) -> Any:
        """The layer's fused integer kernel(s) in Relax over int8 ``args``."""
        raise NotImplementedError

    def emit_unfused(self, ctx: EmitContext, layer: Layer, params: Any, args: list[Any],
                     on_npu: bool) -> Any:
        """The layer as single-op kernels (``build(fuse=False)``); default: as fused."""
        return self.emit(ctx, layer, params, args, on_npu)

    def macs(self, layer: Layer, graph: LayerGraph) -> int:
        """Multiply-accumulates of the layer (0 for data movement and elementwise kinds)."""
        return 0

    def gemm(self, layer: Layer, graph: LayerGraph) -> tuple[int, int, int] | None:
        """(M, N, K) of the matrix product the layer is, or None."""
        return None

    def vector_work(self, layer: Layer, graph: LayerGraph, params: Any = None) -> Any:
        """The layer's work on the NPU's vector unit (``target.npu_vector.VectorWork``), or
        None when it has no vector-unit form. ``params`` (the layer's integer parameters)
        is None when only the geometry matters (placement)."""
        return None
