"""Integer-only rewrite of a calibrated layer graph, and its numpy reference.

From the layer graph and a range per tensor, :func:`plan_quantization` fixes every integer
parameter — int8 weights (symmetric, per output channel), int32 biases with the input zero
point folded in, per-channel fixed-point multipliers and shifts, clamp bounds that carry
ReLU/ReLU6, residual-add rescale factors — and :func:`emit` writes the quantized Relax
``main``: quantize at the float→int8 boundaries (graph inputs, after float layers),
integer kernels for the quantized layers, dequantize where float is needed again (graph
outputs, before float layers). :func:`run_reference` executes the same parameters in numpy:
the oracle the compiled model must equal bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_compiler.errors import QuantizationError
from lepton_compiler.passes.calibrate import qparams
from lepton_compiler.passes.layers import kind_of
from lepton_compiler.passes.layers.base import (
    EmitContext,
    Layer,
    LayerGraph,
    QParams,
    fixed_point,
    quantize_weights,
)

__all__ = ["PartitionInt8", "QParams", "QuantizedGraph", "emit", "fixed_point",
           "plan_quantization", "quantize_weights", "run_layer", "run_reference", "substitute"]


@dataclass
class QuantizedGraph:
    """A layer graph with every integer parameter fixed."""

    graph: LayerGraph
    tensors: dict[str, QParams]                  # int8 tensors and the quantize points
    quantized: set[str]                          # names of layers that run in integers
    params: dict[str, Any] = field(default_factory=dict)  # name -> the kind's parameters
    float_layers: dict[str, str] = field(default_factory=dict)  # name -> reason
    accuracy: dict[str, Any] | None = None       # what accuracy control measured, if it ran

    def is_int8(self, tensor: str) -> bool:
        producer = self.graph.producer(tensor)
        return producer is not None and producer.name in self.quantized


#: Kinds whose output may get one scale per channel (their requantization is per channel).
CHANNEL_OUTPUT_KINDS = ("conv2d", "dense")
#: A channel whose range exceeds this many times the median channel's is an outlier.
OUTLIER = 8.0


def plan_quantization(graph: LayerGraph, ranges: dict[str, tuple[float, float]],
                      skip: set[str], per_channel: bool = True,
                      sentinels: set[str] = frozenset(),
                      channel_ranges: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
                      ) -> QuantizedGraph:
    """Decide which layers run in int8 and fix their integer parameters.

    A layer that would quantize a tensor holding sentinel values (``sentinels``: -inf or
    ``finfo.min`` attention masks, seen in calibration) stays float: int8 cannot carry them.
    A conv2d/dense whose output only float layers read (or the model returns) gets one output
    scale per channel from ``channel_ranges`` (see :func:`_per_channel_outputs`).
    """
    qg = QuantizedGraph(graph, {}, set())
    for layer in graph.layers:
        if layer.kind == "float":
            qg.float_layers[layer.name] = layer.reason
            continue
        if layer.name in skip:
            qg.float_layers[layer.name] = "kept in float by the configuration"
            continue
        kind = kind_of(layer.kind)
        if kind.follows and not qg.is_int8(layer.inputs[0]) and \
                layer.inputs[0] not in graph.fixed:
            continue  # layout/pooling of a float tensor stays float (not worth listing)
        if any(graph.tensors[t].dtype != "float32" for t in layer.inputs):
            qg.float_layers[layer.name] = "its input is not float32"
            continue
        held = [t for t in (*layer.inputs, layer.output) if t in sentinels]
        if held:
            qg.float_layers[layer.name] = (
                f"tensor {held[0]!r} holds mask values (-inf or beyond +-1e30) in "
                "calibration, which int8 cannot carry")
            continue
        needed = [t for t in layer.inputs if not qg.is_int8(t) and t not in qg.tensors]
        if kind.compute:
            needed.append(layer.output)
        unknown = [t for t in needed if t not in graph.fixed and t not in ranges]
        if unknown:
            qg.float_layers[layer.name] = (
                f"no quantization for tensor {unknown[0]!r}: the pre-quantized model does not "
                "quantize it (no QuantizeLinear or quantize_per_tensor); pass calibration "
                "data to quantize the rest")
            continue
        for t in layer.inputs:
            if not qg.is_int8(t) and t not in qg.tensors:
                qg.tensors[t] = _qparams_of(graph, ranges, t)
        qg.quantized.add(layer.name)
        ins = [qg.tensors[t] for t in layer.inputs]
        out = _qparams_of(graph, ranges, layer.output) if kind.compute else \
            kind.output_qparams(layer, ins, ranges)
        if not kind.compute and layer.output in graph.fixed and graph.fixed[layer.output] != out:
            out = ins[0]  # data movement keeps its input's quantization; a different QDQ
            # pair after it is applied where the tensor is read in float (see emit)
        qg.tensors[layer.output] = out
        qg.params[layer.name] = kind.params(layer, ins, out, per_channel)
    _keep_float_where_nothing_is_gained(qg)
    _per_channel_outputs(qg, channel_ranges or {}, per_channel)
    for t, p in graph.fixed.items():  # every pre-quantized tensor keeps its QDQ semantics
        qg.tensors.setdefault(t, p)
    return qg


def _qparams_of(graph: LayerGraph, ranges: dict[str, tuple[float, float]], t: str) -> QParams:
    """A pre-quantized model's own quantization of ``t``, else its calibrated range's."""
    return graph.fixed[t] if t in graph.fixed else QParams(*qparams(*ranges[t]))


def _per_channel_outputs(qg: QuantizedGraph,
                         channel_ranges: dict[str, tuple[np.ndarray, np.ndarray]],
                         per_channel: bool) -> None:
    """One output scale per channel for a conv2d/dense that no int8 layer reads.

    Its requantization is per channel already (multiplier and shift per output channel), so
    a scale per channel costs the NPU nothing; only the dequantize that follows is per
    channel. It matters where a few channels dwarf the others: a transformer's FFN output
    holds outlier channels (190 against values of 2), and one scale for all would leave the
    small channels a handful of levels. Only those outliers get their own scale. The zero
    point stays one per tensor: symmetric (0), or -128 where every channel is non-negative;
    a ReLU6 (one clamp bound in int8 for all channels) keeps one scale."""
    if not per_channel:
        return
    graph = qg.graph
    int8_readers = {t for lay in graph.layers if lay.name in qg.quantized for t in lay.inputs}
    for layer in graph.layers:
        if layer.name not in qg.quantized or layer.kind not in CHANNEL_OUTPUT_KINDS or \
                layer.output in int8_readers or layer.act == "relu6" or \
                layer.output not in channel_ranges or layer.output in graph.fixed:
            continue
        lo, hi = channel_ranges[layer.output]
        if len(lo) != graph.tensors[layer.output].shape[-1]:
            continue
        zero_point = -128 if np.all(lo >= 0) else 0
        reach = hi if zero_point == -128 else np.maximum(-lo, hi)
        # Only outlier channels (beyond OUTLIER x the median reach) get their own scale; the
        # others share the largest of theirs, as one scale per tensor would give them: a
        # channel's range from a few calibration samples is too narrow to trust alone (a
        # classifier's winning logit would clip).
        typical = reach[reach <= OUTLIER * np.median(reach)]
        if typical.size == reach.size:
            continue  # no outliers: one scale, as calibrated
        reach = np.maximum(reach, typical.max() if typical.size else 0.0)
        scale = reach / (255.0 if zero_point == -128 else 127.0)
        scale = np.where(scale > 1e-30, scale, 1.0).astype(np.float32)
        out = QParams(tuple(float(v) for v in scale), zero_point)
        ins = [qg.tensors[t] for t in layer.inputs]
        qg.tensors[layer.output] = out
        qg.params[layer.name] = kind_of(layer.kind).params(layer, ins, out, per_channel)


def _keep_float_where_nothing_is_gained(qg: QuantizedGraph) -> None:
    """A layer without multiply-accumulates (add, concat, pooling, layout) whose result only
    float layers read stays float: in int8 it would add a rounding (and a quantize of any
    float input) and save nothing, its output being dequantized at once. The typical case is
    a transformer's residual add before LayerNorm: the residual stream carries outlier
    channels, and rounding it to int8 costs the small channels their precision."""
    graph = qg.graph
    readers: dict[str, list[Layer]] = {}
    for layer in graph.layers:
        for t in layer.inputs:
            readers.setdefault(t, []).append(layer)
    outputs = set(graph.outputs)
    changed = True
    while changed:
        changed = False
        for layer in reversed(graph.layers):
            if layer.name not in qg.quantized or layer.output in outputs:
                continue
            kind = kind_of(layer.kind)
            users = readers.get(layer.output, [])
            if kind.macs(layer, graph) or not users or \
                    any(u.name in qg.quantized for u in users):
                continue
            qg.quantized.discard(layer.name)
            qg.params.pop(layer.name, None)
            qg.tensors.pop(layer.output, None)
            qg.float_layers[layer.name] = ("only float layers read its result: int8 would "
                                           "add a rounding and save nothing")
            changed = True
    needed = {t for lay in graph.layers if lay.name in qg.quantized for t in lay.inputs}
    needed |= {lay.output for lay in graph.layers if lay.name in qg.quantized}
    for t in list(qg.tensors):
        if t not in needed:
            del qg.tensors[t]


# --- numpy reference -------------------------------------------------------------------------

def run_layer(layer: Layer, params: Any, args: list[np.ndarray],
              out_shape: tuple[int, ...]) -> np.ndarray:
    """One quantized layer on int8 arrays, in numpy (the integer semantics of its kind)."""
    kind = kind_of(layer.kind)
    if kind is None:
        raise QuantizationError(f"{layer.name}: no integer semantics for {layer.kind}")
    return kind.reference(layer, params, args, out_shape)


def run_reference(qg: QuantizedGraph, inputs: dict[str, np.ndarray],
                  keep: bool = False) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Execute the quantized graph's integer arithmetic in numpy.

    Returns the float outputs and, with ``keep``, every int8 tensor by name. Float layers
    are outside the integer semantics: a graph that has any raises QuantizationError.
    """
    from lepton_compiler.target import reference as ref

    graph = qg.graph
    values: dict[str, np.ndarray] = {}
    ints: dict[str, np.ndarray] = {}
    for name in graph.inputs:
        values[name] = np.asarray(inputs[name], np.float32)

    def as_int8(t: str) -> np.ndarray:
        if t not in ints:
            p = qg.tensors[t]
            ints[t] = ref.quantize(values[t], p.scale, p.zero_point)
        return ints[t]

    for layer in graph.layers:
        if layer.name not in qg.quantized and layer.kind in ("reshape", "permute_dims"):
            # Float layout changes are exact: the reference does them in float.
            shape = graph.tensors[layer.output].shape
            t = layer.inputs[0]
            if t not in values:  # an int8 tensor read in float: dequantized, as emit does
                p = qg.tensors[t]
                values[t] = ref.dequantize(ints[t], p.scale, p.zero_point)
            x = values[t]
            values[layer.output] = x.reshape(shape) if layer.kind == "reshape" else \
                np.transpose(x, layer.attrs["axes"])
            continue
        if layer.name not in qg.quantized:
            raise QuantizationError(
                f"the integer reference covers quantized layers only; {layer.name} "
                f"({layer.op}) stays float: {qg.float_layers.get(layer.name, '')}")
        args = [as_int8(t) for t in layer.inputs]
        ints[layer.output] = run_layer(layer, qg.params[layer.name], args,
                                       graph.tensors[layer.output].shape)
    outputs = []
    for t in graph.outputs:
        if t in ints and qg.is_int8(t):
            p = qg.tensors[t]
            outputs.append(ref.dequantize(ints[t], p.scale, p.zero_point))
        else:
            outputs.append(values[t])
    return outputs, (ints if keep else {})


# --- Relax emission --------------------------------------------------------------------------

def emit(qg: QuantizedGraph, keep: list[str] | None = None,
         npu_layers: set[str] | None = None, fuse: bool = True) -> Any:
    """The quantized Relax module (``main`` plus its integer kernels).

    ``keep`` adds the named tensors (dequantized when int8) as extra outputs after the
    model's own; the per-layer analysis reads intermediate values through them.
    ``npu_layers``: the GEMM layers placed on the NPU (their kernels are marked for the NPU
    schedules); ``None`` marks every GEMM kernel. ``fuse=False`` emits each GEMM layer as
    separate kernels (gather, product, bias add, requantize, activation) and every fused
    activation as its own clamp: the same arithmetic, for checking the composites.
    """
    import tvm
    from tvm import relax

    from lepton_compiler.target import qkernels

    graph = qg.graph
    bb = relax.BlockBuilder()
    float_env: dict[str, Any] = {}
    int_env: dict[str, Any] = {}
    params = []
    for name, p in zip(graph.inputs, graph.params, strict=True):
        var = relax.Var(name, p.ty)
        params.append(var)
        float_env[name] = var

    def call(func: Any, name: str, args: list[Any], shape: tuple[int, ...],
             dtype: str) -> Any:
        gvar = bb.add_func(func, f"q_{name}")  # identical kernels are shared
        # The binding is named after the layer: the plan records it as the call's source op.
        return bb.emit(relax.call_tir(gvar, args, out_ty=relax.TensorType(list(shape), dtype)),
                       name_hint=name)

    def get_int8(t: str) -> Any:
        if t not in int_env:
            shape = graph.tensors[t].shape
            p = qg.tensors[t]
            int_env[t] = call(qkernels.quantize_func(shape, p.scale, p.zero_point),
                              f"quantize_{t}", [float_env[t]], shape, "int8")
        return int_env[t]

    def get_float(t: str) -> Any:
        if t not in float_env:
            shape = graph.tensors[t].shape
            p = qg.tensors[t]
            if p.per_channel:
                float_env[t] = call(qkernels.dequantize_channels_func(shape, p.zero_point),
                                    f"dequantize_{t}",
                                    [int_env[t], relax.const(np.array(p.scale, np.float32))],
                                    shape, "float32")
            else:
                float_env[t] = call(qkernels.dequantize_func(shape, p.scale, p.zero_point),
                                    f"dequantize_{t}", [int_env[t]], shape, "float32")
        return float_env[t]

    def pre_quantized(t: str) -> None:
        """A pre-quantized model's QDQ pair on a tensor computed in float: round it through
        its int8 quantization, as the model says."""
        if t in graph.fixed and t in float_env and t not in int_env:
            get_int8(t)
            del float_env[t]
            get_float(t)

    ctx = EmitContext(bb, graph, call)
    with bb.function("main", params):
        with bb.dataflow():
            for name in graph.inputs:
                pre_quantized(name)
            for layer in graph.layers:
                if layer.name in qg.quantized:
                    on_npu = npu_layers is None or layer.name in npu_layers
                    kind = kind_of(layer.kind)
                    emit_one = kind.emit if fuse else kind.emit_unfused
                    args = [get_int8(t) for t in layer.inputs]
                    int_env[layer.output] = emit_one(ctx, layer, qg.params[layer.name], args,
                                                     on_npu)
                else:
                    float_env[layer.output] = _emit_float(bb, layer, graph, get_float)
                    pre_quantized(layer.output)
            outs = [get_float(t) for t in graph.outputs + list(keep or [])]
            if graph.tuple_output or keep:
                gv = bb.emit_output(relax.Tuple(outs))
            else:
                gv = bb.emit_output(outs[0])
        bb.emit_func_output(gv)
    from lepton_compiler import tvm_compat

    mod = tvm_compat.add_functions(bb.get(), graph.helpers)
    return relax.transform.Normalize()(tvm.IRModule(dict(mod.functions.items())))


def PartitionInt8(qg: QuantizedGraph, npu_layers: set[str] | None = None,
                  fuse: bool = True) -> Any:
    """The module pass ``lepton.PartitionInt8``: the float module ``qg`` was planned from
    becomes its quantized module (:func:`emit`), the layers in ``npu_layers`` marked for the
    NPU. A module whose ``main`` is not the planned graph (other layers, other shapes) is
    refused with a :class:`QuantizationError` rather than silently replaced."""
    import tvm

    from lepton_compiler.passes.qgraph import read_graph

    expected = [(layer.name, layer.kind, tuple(qg.graph.tensors[layer.output].shape))
                for layer in qg.graph.layers]

    @tvm.transform.module_pass(opt_level=0, name="lepton.PartitionInt8")
    def transform(mod: Any, _ctx: Any) -> Any:
        graph = read_graph(mod["main"])
        found = [(layer.name, layer.kind, tuple(graph.tensors[layer.output].shape))
                 for layer in graph.layers]
        if found != expected:
            diff = next((f"{a} != {b}" for a, b in zip(found, expected, strict=False) if a != b),
                        f"{len(found)} layers, the plan has {len(expected)}")
            raise QuantizationError(
                f"lepton.PartitionInt8: the module is not the graph the quantization plan was "
                f"made for (first difference: {diff}); calibrate and plan this module again")
        return emit(qg, npu_layers=npu_layers, fuse=fuse)

    return transform


def _emit_float(bb: Any, layer: Layer, graph: LayerGraph, get_float: Any) -> Any:
    """Re-emit a float layer's original bindings over the float values of its inputs."""
    local: dict[Any, Any] = {}

    def lookup(var: Any) -> Any:
        return local[var] if var in local else get_float(graph.var_names[var])

    out = None
    for var, value in layer.bindings:
        out = local[var] = bb.emit(substitute(value, lookup))
    return out


def substitute(expr: Any, lookup: Any) -> Any:
    """``expr`` with every variable ``v`` replaced by ``lookup(v)``."""
    from tvm import relax

    def sub(e: Any) -> Any:
        if isinstance(e, relax.Var):
            return lookup(e)
        if isinstance(e, relax.Tuple):
            return relax.Tuple([sub(f) for f in e.fields])
        if isinstance(e, relax.TupleGetItem):
            return relax.TupleGetItem(sub(e.tuple_value), e.index)
        if isinstance(e, relax.Call):
            return relax.Call(e.op, [sub(a) for a in e.args], e.attrs, e.ty_args)
        return e

    return sub(expr)
