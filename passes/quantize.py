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
from lepton_compiler.passes.calibrate import qparams
from lepton_compiler.passes.qgraph import COMPUTE_KINDS, FOLLOW_KINDS, GEMM_KINDS, Layer, LayerGraph

from lepton_compiler.errors import QuantizationError


@dataclass(frozen=True)
class QParams:
    """An int8 tensor's real value is ``scale * (q - zero_point)``."""

    scale: float
    zero_point: int


@dataclass
class QuantizedGraph:
    """A layer graph with every integer parameter fixed."""

    graph: LayerGraph
    tensors: dict[str, QParams]                  # int8 tensors and the quantize points
    quantized: set[str]                          # names of layers that run in integers
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    float_layers: dict[str, str] = field(default_factory=dict)  # name -> reason

    def is_int8(self, tensor: str) -> bool:
        producer = self.graph.producer(tensor)
        return producer is not None and producer.name in self.quantized


def quantize_weights(weight: np.ndarray, per_channel: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights over the last axis (output channel): ``(w_q, scale)``.

    An all-zero channel gets scale ``1/127`` (any finite value represents zeros exactly).
    """
    w = np.asarray(weight, np.float64)
    axes = tuple(range(w.ndim - 1))
    peak = np.abs(w).max(axis=axes) if per_channel else np.full(w.shape[-1], np.abs(w).max())
    if not np.all(np.isfinite(peak)):
        raise QuantizationError("weights contain NaN or Inf; they cannot be quantized")
    scale = np.where(peak > 0, peak / 127.0, 1.0 / 127.0).astype(np.float32).astype(np.float64)
    w_q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return w_q, scale


def fixed_point(real: float) -> tuple[int, int]:
    """(multiplier, shift) for requantization by ``real``; tiny scales flush to zero."""
    from lepton_compiler.target.reference import quantize_multiplier

    if real < 2.0 ** -32:
        return 0, 1
    if real >= 2.0 ** 30:
        raise QuantizationError(f"requantization scale {real:g} is too large for int32 "
                                "arithmetic; check the calibration ranges")
    return quantize_multiplier(real)


def _clamp_bounds(act: str | None, out: QParams) -> tuple[int, int]:
    lo, hi = -128, 127
    if act in ("relu", "relu6"):
        lo = max(lo, out.zero_point)
    if act == "relu6":
        hi = min(hi, out.zero_point + int(np.floor(6.0 / out.scale + 0.5)))
    return lo, hi


def plan_quantization(graph: LayerGraph, ranges: dict[str, tuple[float, float]],
                      skip: set[str], per_channel: bool = True) -> QuantizedGraph:
    """Decide which layers run in int8 and fix their integer parameters."""
    qg = QuantizedGraph(graph, {}, set())
    for layer in graph.layers:
        if layer.kind == "float":
            qg.float_layers[layer.name] = layer.reason
            continue
        if layer.name in skip:
            qg.float_layers[layer.name] = "kept in float by the configuration"
            continue
        if layer.kind in FOLLOW_KINDS and not qg.is_int8(layer.inputs[0]):
            continue  # layout/pooling of a float tensor stays float (not worth listing)
        if any(graph.tensors[t].dtype != "float32" for t in layer.inputs):
            qg.float_layers[layer.name] = "its input is not float32"
            continue
        for t in layer.inputs:
            if not qg.is_int8(t) and t not in qg.tensors:
                qg.tensors[t] = QParams(*qparams(*ranges[t]))
        qg.quantized.add(layer.name)
        if layer.kind in COMPUTE_KINDS:
            out = qg.tensors[layer.output] = QParams(*qparams(*ranges[layer.output]))
        else:
            out = qg.tensors[layer.output] = qg.tensors[layer.inputs[0]]
        qg.params[layer.name] = _layer_params(layer, qg, out, per_channel)
    return qg


def _layer_params(layer: Layer, qg: QuantizedGraph, out: QParams,
                  per_channel: bool) -> dict[str, Any]:
    ins = [qg.tensors[t] for t in layer.inputs]
    if layer.kind in GEMM_KINDS:
        x = ins[0]
        w_q, w_scale = quantize_weights(layer.weight, per_channel)
        channels = w_q.shape[-1]
        acc_scale = x.scale * w_scale
        bias = layer.bias if layer.bias is not None else np.zeros(channels)
        if not np.all(np.isfinite(bias)):
            raise QuantizationError(f"{layer.name}: the bias contains NaN or Inf")
        w_sum = w_q.reshape(-1, channels).astype(np.int64).sum(axis=0)
        bias_q = np.round(bias / acc_scale).astype(np.int64) - x.zero_point * w_sum
        bias_q = np.clip(bias_q, -(2**31), 2**31 - 1).astype(np.int32)
        pairs = [fixed_point(float(r)) for r in acc_scale / out.scale]
        lo, hi = _clamp_bounds(layer.act, out)
        return {"weight": w_q, "weight_scale": w_scale, "bias": bias_q,
                "multiplier": np.array([p[0] for p in pairs], np.int32),
                "shift": np.array([p[1] for p in pairs], np.int32),
                "input_zero_point": x.zero_point, "zero_point": out.zero_point,
                "lo": lo, "hi": hi}
    if layer.kind == "matmul":
        (a, b) = ins
        multiplier, shift = fixed_point(a.scale * b.scale / out.scale)
        lo, hi = _clamp_bounds(layer.act, out)
        return {"za": a.zero_point, "zb": b.zero_point, "multiplier": multiplier,
                "shift": shift, "zero_point": out.zero_point, "lo": lo, "hi": hi}
    if layer.kind == "add":
        (a, b) = ins
        ra, rb = a.scale / out.scale, b.scale / out.scale
        exponent = int(np.frexp(max(ra, rb))[1])
        shift = int(np.clip(30 - exponent, 1, 62))
        if 30 - exponent < 1:
            raise QuantizationError(f"{layer.name}: input/output scale ratio {max(ra, rb):g} "
                                    "is too large")
        lo, hi = _clamp_bounds(layer.act, out)
        return {"za": a.zero_point, "ma": round(ra * 2**shift), "zb": b.zero_point,
                "mb": round(rb * 2**shift), "shift": shift, "zo": out.zero_point,
                "lo": lo, "hi": hi}
    if layer.kind == "relu":
        return {"lo": ins[0].zero_point, "hi": 127}
    if layer.kind == "clip":
        x = ins[0]
        lo = max(-128, x.zero_point + int(np.ceil(layer.attrs["min"] / x.scale - 0.5)))
        hi = min(127, x.zero_point + int(np.floor(layer.attrs["max"] / x.scale + 0.5)))
        return {"lo": lo, "hi": max(lo, hi)}
    return {}


# --- numpy reference -------------------------------------------------------------------------

def run_layer(layer: Layer, params: dict[str, Any], args: list[np.ndarray],
              out_shape: tuple[int, ...]) -> np.ndarray:
    """One quantized layer on int8 arrays, in numpy (the integer semantics)."""
    from lepton_compiler.target import reference as ref

    p = params
    if layer.kind == "conv2d" and layer.attrs["groups"] != 1:
        return ref.grouped_conv2d(args[0], p["weight"], layer.attrs["groups"], p["bias"],
                                  p["multiplier"], p["shift"], p["input_zero_point"],
                                  p["zero_point"], p["lo"], p["hi"], layer.attrs["strides"],
                                  layer.attrs["padding"], layer.attrs["dilation"])
    if layer.kind == "conv2d":
        return ref.conv2d(args[0], p["weight"], p["bias"], p["multiplier"], p["shift"],
                          p["input_zero_point"], p["zero_point"], p["lo"], p["hi"],
                          layer.attrs["strides"], layer.attrs["padding"],
                          layer.attrs["dilation"])
    if layer.kind == "dense":
        x = args[0]
        flat = x.reshape(-1, x.shape[-1])
        out = ref.dense(flat, p["weight"], p["bias"], p["multiplier"], p["shift"],
                        p["zero_point"], p["lo"], p["hi"])
        return out.reshape(out_shape)
    if layer.kind == "add":
        return ref.add(args[0], args[1], p["za"], p["ma"], p["zb"], p["mb"], p["shift"],
                       p["zo"], p["lo"], p["hi"])
    if layer.kind == "matmul":
        return ref.matmul(args[0], args[1], p["za"], p["zb"], p["multiplier"], p["shift"],
                          p["zero_point"], p["lo"], p["hi"])
    if layer.kind in ("relu", "clip"):
        return ref.clamp(args[0], p["lo"], p["hi"])
    if layer.kind == "mean":
        return ref.mean(args[0], layer.attrs["axes"], layer.attrs["keepdims"])
    if layer.kind == "max_pool2d":
        a = layer.attrs
        return ref.max_pool2d(args[0], a["pool_size"], a["strides"], a["padding"])
    if layer.kind == "avg_pool2d":
        out = ref.avg_pool2d(args[0], layer.attrs["pool_size"], layer.attrs["strides"])
        return out.reshape(out_shape)  # a spatial mean without keepdims drops H, W
    if layer.kind == "reshape":
        return args[0].reshape(out_shape)
    if layer.kind == "permute_dims":
        return np.transpose(args[0], layer.attrs["axes"])
    raise QuantizationError(f"{layer.name}: no integer semantics for {layer.kind}")


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
            x = values[layer.inputs[0]]
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
    from lepton_compiler.target import qkernels
    from tvm import relax

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
            float_env[t] = call(qkernels.dequantize_func(shape, p.scale, p.zero_point),
                                f"dequantize_{t}", [int_env[t]], shape, "float32")
        return float_env[t]

    with bb.function("main", params):
        with bb.dataflow():
            for layer in graph.layers:
                if layer.name in qg.quantized:
                    on_npu = npu_layers is None or layer.name in npu_layers
                    emit_one = _emit_layer if fuse else _emit_unfused
                    int_env[layer.output] = emit_one(bb, layer, qg, get_int8, call, on_npu)
                else:
                    float_env[layer.output] = _emit_float(bb, layer, graph, get_float)
            outs = [get_float(t) for t in graph.outputs + list(keep or [])]
            if graph.tuple_output or keep:
                gv = bb.emit_output(relax.Tuple(outs))
            else:
                gv = bb.emit_output(outs[0])
        bb.emit_func_output(gv)
    from lepton_compiler import tvm_compat

    mod = tvm_compat.add_functions(bb.get(), graph.helpers)
    return relax.transform.Normalize()(tvm.IRModule(dict(mod.functions.items())))


def _emit_layer(bb: Any, layer: Layer, qg: QuantizedGraph, get_int8: Any, call: Any,
                on_npu: bool) -> Any:
    from lepton_compiler.target import qkernels
    from lepton_compiler.target.npu_kernels import Conv2dShape
    from tvm import relax

    graph = qg.graph
    p = qg.params[layer.name]
    out_shape = graph.tensors[layer.output].shape
    args = [get_int8(t) for t in layer.inputs]
    if layer.kind in GEMM_KINDS:
        vectors = [relax.const(p[k]) for k in ("bias", "multiplier", "shift")]
        qp = relax.const(np.array([p["zero_point"], p["lo"], p["hi"]], np.int32))
        w = p["weight"]
        if layer.kind == "conv2d":
            n, h, wd, cin = graph.tensors[layer.inputs[0]].shape
            kh, kw, _, cout = w.shape
            a = layer.attrs
            shape = Conv2dShape(n, h, wd, cin, cout, kh, kw, a["strides"], a["padding"],
                                a["dilation"])
            m = shape.gemm[0]
            pointwise = (kh, kw) == (1, 1) and a["strides"] == (1, 1) and \
                not any(a["padding"]) and a["groups"] == 1
            if a["groups"] != 1:  # grouped/depthwise: a host kernel over HWIO weights
                func = qkernels.grouped_conv2d_func(shape, a["groups"], p["input_zero_point"])
                weight = relax.const(np.ascontiguousarray(w))
            elif pointwise:  # a 1x1 conv is a matrix product over pixels: no window gather
                func = qkernels.dense_func(m, cin, cout)
                weight = relax.const(np.ascontiguousarray(w.reshape(cin, cout)))
                args = [bb.emit(relax.op.reshape(args[0], [m, cin]))]
            else:
                func = qkernels.conv2d_func(shape, p["input_zero_point"])
                weight = relax.const(np.ascontiguousarray(w.reshape(kh * kw * cin, cout)))
            x = args[0]
        else:
            in_shape = graph.tensors[layer.inputs[0]].shape
            k, cout = w.shape
            m = int(np.prod(in_shape[:-1]))
            func = qkernels.dense_func(m, k, cout)
            weight = relax.const(np.ascontiguousarray(w))
            x = args[0] if len(in_shape) == 2 else bb.emit(relax.op.reshape(args[0], [m, k]))
        if not on_npu and func.attrs is not None and qkernels.GEMM_ATTR in func.attrs:
            func = func.with_attr(qkernels.GEMM_ATTR, "")  # placed on the host
        out = call(func, layer.name, [x, weight, *vectors, qp], (m, cout), "int8")
        if tuple(out_shape) == (m, cout):
            return out
        return bb.emit(relax.op.reshape(out, list(out_shape)))
    if layer.kind == "add":
        func = qkernels.add_func(out_shape, p["za"], p["ma"], p["zb"], p["mb"], p["shift"],
                                 p["zo"], p["lo"], p["hi"])
        return call(func, layer.name, args, out_shape, "int8")
    if layer.kind == "matmul":
        a_shape = graph.tensors[layer.inputs[0]].shape
        b_shape = graph.tensors[layer.inputs[1]].shape
        batch = int(np.prod(a_shape[:-2]))
        m, k, n = a_shape[-2], a_shape[-1], b_shape[-1]
        func = qkernels.batch_matmul_func(batch, m, k, n, p["za"], p["zb"], p["multiplier"],
                                          p["shift"], p["zero_point"], p["lo"], p["hi"])
        if not on_npu:
            func = func.with_attr(qkernels.GEMM_ATTR, "")
        a3 = bb.emit(relax.op.reshape(args[0], [batch, m, k]))
        b3 = bb.emit(relax.op.reshape(args[1], [batch, k, n]))
        out = call(func, layer.name, [a3, b3], (batch, m, n), "int8")
        return bb.emit(relax.op.reshape(out, list(out_shape)))
    if layer.kind in ("relu", "clip"):
        return call(qkernels.clamp_func(out_shape, p["lo"], p["hi"]),
                    layer.name, args, out_shape, "int8")
    if layer.kind == "mean":
        in_shape = graph.tensors[layer.inputs[0]].shape
        return call(qkernels.mean_func(in_shape, layer.attrs["axes"], layer.attrs["keepdims"]),
                    layer.name, args, out_shape, "int8")
    if layer.kind == "max_pool2d":
        a = layer.attrs
        nb, h, w_, c = graph.tensors[layer.inputs[0]].shape
        func = qkernels.max_pool2d_func(nb, h, w_, c, a["pool_size"], a["strides"],
                                        a["padding"], out_shape[1:3])
        return call(func, layer.name, args, out_shape, "int8")
    if layer.kind == "avg_pool2d":
        a = layer.attrs
        nb, h, w_, c = graph.tensors[layer.inputs[0]].shape
        ph, pw = a["pool_size"]
        sh, sw = a["strides"]
        pooled = (nb, (h - ph) // sh + 1, (w_ - pw) // sw + 1, c)
        func = qkernels.avg_pool2d_func(nb, h, w_, c, a["pool_size"], a["strides"],
                                        pooled[1:3])
        out = call(func, layer.name, args, pooled, "int8")
        if tuple(out_shape) == pooled:
            return out
        return bb.emit(relax.op.reshape(out, list(out_shape)))
    if layer.kind == "reshape":
        return bb.emit(relax.op.reshape(args[0], list(out_shape)))
    if layer.kind == "permute_dims":
        return bb.emit(relax.op.permute_dims(args[0], list(layer.attrs["axes"])))
    raise QuantizationError(f"{layer.name}: cannot emit {layer.kind}")


def _emit_unfused(bb: Any, layer: Layer, qg: QuantizedGraph, get_int8: Any, call: Any,
                  on_npu: bool) -> Any:
    """``layer`` as a chain of single-op kernels (see :func:`emit`)."""
    from lepton_compiler.target import qkernels
    from lepton_compiler.target.npu_kernels import Conv2dShape
    from tvm import relax

    graph = qg.graph
    p = qg.params[layer.name]
    out_shape = graph.tensors[layer.output].shape
    grouped = layer.kind == "conv2d" and layer.attrs["groups"] != 1
    if layer.kind not in ("conv2d", "dense", "add") or grouped or (
            layer.kind == "add" and layer.act is None):
        return _emit_layer(bb, layer, qg, get_int8, call, on_npu)
    if layer.kind == "add":
        func = qkernels.add_func(out_shape, p["za"], p["ma"], p["zb"], p["mb"], p["shift"],
                                 p["zo"], -128, 127)
        y = call(func, f"{layer.name}_add", [get_int8(t) for t in layer.inputs], out_shape,
                 "int8")
        return call(qkernels.clamp_func(out_shape, p["lo"], p["hi"]), f"{layer.name}_act", [y],
                    out_shape, "int8")
    w = p["weight"]
    x = get_int8(layer.inputs[0])
    if layer.kind == "conv2d":
        n, h, wd, cin = graph.tensors[layer.inputs[0]].shape
        kh, kw, _, cout = w.shape
        a = layer.attrs
        shape = Conv2dShape(n, h, wd, cin, cout, kh, kw, a["strides"], a["padding"],
                            a["dilation"])
        m, _, k = shape.gemm
        x = call(qkernels.im2col_func(shape, p["input_zero_point"]), f"{layer.name}_im2col",
                 [x], (m, k), "int8")
        w = w.reshape(k, cout)
    else:
        k, cout = w.shape
        m = int(np.prod(graph.tensors[layer.inputs[0]].shape[:-1]))
        if len(graph.tensors[layer.inputs[0]].shape) != 2:
            x = bb.emit(relax.op.reshape(x, [m, k]))
    acc = call(qkernels.gemm_acc_func(m, k, cout), f"{layer.name}_gemm",
               [x, relax.const(np.ascontiguousarray(w))], (m, cout), "int32")
    acc = call(qkernels.bias_add_func(m, cout), f"{layer.name}_bias",
               [acc, relax.const(p["bias"])], (m, cout), "int32")
    qp = relax.const(np.array([p["zero_point"], -128, 127], np.int32))  # no activation here
    y = call(qkernels.requant_func(m, cout), f"{layer.name}_requant",
             [acc, relax.const(np.zeros(cout, np.int32)), relax.const(p["multiplier"]),
              relax.const(p["shift"]), qp], (m, cout), "int8")
    if layer.act is not None:
        y = call(qkernels.clamp_func((m, cout), p["lo"], p["hi"]), f"{layer.name}_act", [y],
                 (m, cout), "int8")
    if tuple(out_shape) == (m, cout):
        return y
    return bb.emit(relax.op.reshape(y, list(out_shape)))


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
