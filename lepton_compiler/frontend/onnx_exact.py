"""No silent wrong answers from TVM's ONNX importer: exact rewrites, and refusals.

TVM 0.27 imports some ONNX op/attribute combinations into Relax that compute something
else. Each is either rewritten, before import, into ONNX ops that TVM computes exactly
(:func:`rewrite`), or refused at build time with the reason (:func:`inexact_nodes`, raised as
an :class:`~lepton_compiler.errors.UnsupportedOperatorError` and listed by ``lepton check``).

Rewrites (the ONNX definition, in ops TVM gets right):

- ``BitShift`` with a shift that is not a constant in ``[0, bits)``: TVM's shift is the
  CPU's (amounts wrap); ONNX gives 0 (and -1 for a right shift of a negative value) for an
  amount that is negative or at least the bit width.
- ``Mod`` with ``fmod=0`` on floats (numpy's ``mod``): from ``fmod`` — add the divisor when
  the signs differ, a zero takes the divisor's sign — instead of ``x - floor(x/y)*y``, which
  gives NaN for an infinite divisor.
- ``IsInf`` with ``detect_negative=0`` or ``detect_positive=0``: TVM ignores both flags.
- ``Dropout`` in inference (``training_mode`` absent or 0, or ``ratio`` 0): the output is the
  input and the mask all true (TVM returned a float mask).
- float16 ``MatMul``, ``Conv``, reductions and normalizations (the :data:`ACCUMULATING`
  ops) run in float32 between casts: TVM accumulated in float16; float16 ``Softmax`` takes
  the reference's steps (exp rounded to float16, summed in float32, one division).

(``Softplus``, also inside ``Mish``, is imported by ``importer._softplus_log1p``.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler.frontend.onnx_prepare import infer, model_opset, value_types
from lepton_compiler.frontend.onnx_validate import graph_values, static_dims


class _Builder:
    """New nodes and constants with names that cannot clash with the model's."""

    def __init__(self, proto: Any, prefix: str, opset: int) -> None:
        self.proto = proto
        self.opset = opset
        self.prefix = prefix
        self.count = 0
        self.nodes: list[Any] = []

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}/{hint}{self.count}"

    def const(self, value: Any, dtype: Any) -> str:
        from onnx import numpy_helper

        name = self.name("c")
        self.proto.graph.initializer.append(
            numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None,
           **attrs: Any) -> str:
        from onnx import helper

        out = output or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type),
                                           **attrs))
        return out


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _constants(proto: Any) -> dict[str, np.ndarray]:
    """The small initializers (attribute-like operands), as arrays."""
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer
            if int(np.prod(t.dims, dtype=np.int64)) <= 4096}


def _elem_types(proto: Any) -> dict[str, int]:
    return {name: t.tensor_type.elem_type for name, t in value_types(proto).items()
            if t.HasField("tensor_type")}


def _mentions_float16(proto: Any) -> bool:
    """Whether any declared value, initializer or cast is float16 (else no float16 op)."""
    values = [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]
    if any(v.type.HasField("tensor_type") and v.type.tensor_type.elem_type == _FLOAT16
           for v in values) or any(t.data_type == _FLOAT16 for t in proto.graph.initializer):
        return True
    for node in proto.graph.node:
        if node.op_type == "CastLike" or (node.op_type == "Cast" and
                                          _attr(node, "to") == _FLOAT16):
            return True
        value = _attr(node, "value") if node.op_type == "Constant" else None
        if value is not None and getattr(value, "data_type", None) == _FLOAT16:
            return True
    return False


def rewrite(proto: Any) -> Any:
    """``proto`` with the op/attribute combinations of the module docstring rewritten."""
    import onnx

    targets = {"BitShift", "Mod", "IsInf", "Dropout"}
    if _mentions_float16(proto):
        targets |= {"Softmax", *ACCUMULATING}
    if not any(n.op_type in targets and n.domain in ("", "ai.onnx") for n in proto.graph.node):
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    consts = _constants(proto)
    types = _elem_types(proto)
    opset = model_opset(proto)
    del out.graph.node[:]
    for index, node in enumerate(proto.graph.node):
        b = _Builder(out, f"{node.name or node.op_type}#exact{index}", opset)
        done = node.domain in ("", "ai.onnx") and _rewrite_node(node, b, consts, types)
        if done:
            out.graph.node.extend(b.nodes)
        else:
            out.graph.node.append(node)
    return out


#: Ops that sum many products or terms: on float16 they run in float32 and round once, as
#: numpy and onnxruntime's CPU kernels do (float16 sums drift by several ulps otherwise).
ACCUMULATING = frozenset({
    "MatMul", "Gemm", "Conv", "ConvTranspose", "LogSoftmax", "ReduceSum",
    "ReduceMean", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceProd", "LayerNormalization", "GroupNormalization",
    "InstanceNormalization", "BatchNormalization", "AveragePool", "GlobalAveragePool",
    "LpPool", "CumSum", "Einsum", "MeanVarianceNormalization", "LpNormalization",
})
_FLOAT16 = 10


def _in_float32(node: Any, b: _Builder, types: dict[str, int]) -> bool:
    """A float16 accumulating node computed in float32 between casts."""
    import onnx

    if not node.input or types.get(node.input[0]) != _FLOAT16:
        return False
    inner = onnx.NodeProto()
    inner.CopyFrom(node)
    inner.name = b.name(node.op_type)
    for k, name in enumerate(node.input):
        if name and types.get(name) == _FLOAT16:
            inner.input[k] = b.op("Cast", [name], to=onnx.TensorProto.FLOAT)
    casts = []
    for k, name in enumerate(node.output):
        if name and types.get(name, _FLOAT16) == _FLOAT16:
            inner.output[k] = b.name("f32")
            casts.append((inner.output[k], name))
    b.nodes.append(inner)
    for wide, name in casts:
        b.op("Cast", [wide], name, to=_FLOAT16)
    return True


def _rewrite_node(node: Any, b: _Builder, consts: dict[str, np.ndarray],
                  types: dict[str, int]) -> bool:
    from onnx import helper

    op = node.op_type
    if op in ACCUMULATING:
        return _in_float32(node, b, types)
    if op == "Softmax" and types.get(node.input[0]) == _FLOAT16 and b.opset >= 13:
        # the reference's steps: exp rounded to float16, summed in float32, one division
        x, axis = node.input[0], _attr(node, "axis", -1)
        axes = b.const([axis], np.int64)
        e = b.op("Exp", [b.op("Sub", [x, b.op("ReduceMax", [x, axes], keepdims=1)])])
        total = b.op("ReduceSum", [b.op("Cast", [e], to=1), axes], keepdims=1)
        b.op("Div", [e, b.op("Cast", [total], to=_FLOAT16)], node.output[0])
        return True
    if op == "BitShift":
        a, s = node.input
        dtype = helper.tensor_dtype_to_np_dtype(types.get(a, 0)) if types.get(a) else None
        if dtype is None:
            return False
        bits = np.iinfo(dtype).bits
        if s in consts and np.all((consts[s] >= 0) & (consts[s] < bits)):
            return False
        zero = b.const(0, dtype)
        valid = b.op("And", [b.op("GreaterOrEqual", [s, zero]),
                             b.op("Less", [s, b.const(bits, dtype)])])
        shifted = b.op("BitShift", [a, b.op("Where", [valid, s, zero])],
                       direction=_attr(node, "direction"))
        fallback = zero
        if _attr(node, "direction") == b"RIGHT" and np.issubdtype(dtype, np.signedinteger):
            fallback = b.op("Where", [b.op("Less", [a, zero]), b.const(-1, dtype), zero])
        b.op("Where", [valid, shifted, fallback], node.output[0])
        return True
    if op == "Mod":
        a, d = node.input
        dtype = helper.tensor_dtype_to_np_dtype(types[a]) if types.get(a) else None
        if dtype is None or not np.issubdtype(dtype, np.floating) or _attr(node, "fmod", 0):
            return False
        zero = b.const(0, dtype)
        m = b.op("Mod", [a, d], fmod=1)
        nonzero = b.op("Not", [b.op("Equal", [m, zero])])
        differ = b.op("Xor", [b.op("Less", [d, zero]), b.op("Less", [m, zero])])
        adjusted = b.op("Where", [b.op("And", [nonzero, differ]), b.op("Add", [m, d]), m])
        signed_zero = b.op("Mul", [b.op("Sign", [d]), zero])
        finite = b.op("Where", [nonzero, adjusted, signed_zero])
        # fmod's NaN cases spelled out, selected last (a fused kernel dropped the NaN that
        # fmod gives for x % 0 when it flowed through the comparisons above)
        undefined = b.op("Or", [b.op("Or", [b.op("IsInf", [a]), b.op("Equal", [d, zero])]),
                                b.op("Or", [b.op("IsNaN", [a]), b.op("IsNaN", [d])])])
        b.op("Where", [undefined, b.const(np.nan, dtype), finite], node.output[0])
        return True
    if op == "IsInf":
        negative, positive = _attr(node, "detect_negative", 1), _attr(node, "detect_positive", 1)
        if negative and positive:
            return False
        x = node.input[0]
        dtype = helper.tensor_dtype_to_np_dtype(types[x]) if types.get(x) else np.float32
        inf = b.op("IsInf", [x])
        if not negative and not positive:
            b.op("And", [inf, b.const(False, np.bool_)], node.output[0])
        else:
            sign = b.op("Greater" if positive else "Less", [x, b.const(0, dtype)])
            b.op("And", [inf, sign], node.output[0])
        return True
    if op == "Dropout":
        ratio = consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else 0.5
        training = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] \
            else np.array(False)
        if ratio is None or training is None or (bool(training) and float(ratio) != 0.0):
            return False  # refused by inexact_nodes
        b.op("Identity", [node.input[0]], node.output[0])
        if len(node.output) > 1 and node.output[1]:
            b.op("Expand", [b.const(True, np.bool_), b.op("Shape", [node.input[0]])],
                 node.output[1])
        return True
    return False


_DATA_DEPENDENT = ("its output shape depends on input values; Lepton compiles static shapes "
                   "(apply it to constants, or after the model's outputs)")
#: Ops TVM imports but Lepton cannot compile for a static plan, with the reason.
UNCOMPILABLE = {
    "NonZero": _DATA_DEPENDENT, "Unique": _DATA_DEPENDENT, "Compress": _DATA_DEPENDENT,
    "NonMaxSuppression": _DATA_DEPENDENT,
    "TopK": "sorting has no host kernel yet (the runtime carries no sort routine)",
}


def inexact_nodes(proto: Any) -> dict[str, tuple[list[str], str]]:
    """``{op: (node labels, reason)}`` for every node Lepton cannot compute exactly (or,
    :data:`UNCOMPILABLE`, at all)."""
    consts = _constants(proto)
    needs_shapes = any(n.op_type in ("Resize", "ConvTranspose") for n in proto.graph.node)
    shapes = _static_dims(proto) if needs_shapes else {}
    found: dict[str, tuple[list[str], str]] = {}

    def refuse(node: Any, index: int, reason: str) -> None:
        entry = found.setdefault(node.op_type, ([], reason))
        entry[0].append(node.name or f"#{index}")

    for index, node in enumerate(proto.graph.node):
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            continue
        if op in UNCOMPILABLE:
            refuse(node, index, UNCOMPILABLE[op])
        elif op == "BatchNormalization" and _attr(node, "training_mode", 0):
            refuse(node, index, "training_mode=1 (batch statistics and running-mean outputs) "
                   "is a training op; export the model in eval mode")
        elif op == "ConvTranspose" and _attr(node, "output_shape") is not None and \
                list(_attr(node, "output_shape")) != _conv_transpose_size(node, shapes):
            refuse(node, index, "an output_shape other than the one pads and output_padding "
                   "give is not supported; give pads and output_padding instead")
        elif op == "Dropout":
            training = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] \
                else np.array(False)
            if training is None or bool(training):
                refuse(node, index, "training-mode Dropout draws a random mask; export the "
                       "model in eval mode")
        elif op == "RoiAlign" and _attr(node, "mode", b"avg") == b"max":
            refuse(node, index, "mode='max' is not supported (only 'avg')")
        elif op == "SpaceToDepth" and _attr(node, "mode", b"DCR") == b"CRD":
            refuse(node, index, "mode='CRD' is not supported (only 'DCR')")
        elif op == "Resize":
            reason = _resize_inexact(node, consts, shapes)
            if reason:
                refuse(node, index, reason)
    return found


def _conv_transpose_size(node: Any, shapes: dict[str, list[int]]) -> list[int] | None:
    """ConvTranspose's spatial output size from its pads and output_padding (what TVM
    computes, ignoring ``output_shape``), or None when the shapes are not static."""
    x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
    if x is None or w is None:
        return None
    n = len(x) - 2
    strides = list(_attr(node, "strides", [1] * n))
    if _attr(node, "auto_pad", b"NOTSET") in (b"SAME_UPPER", b"SAME_LOWER"):
        return [x[2 + i] * strides[i] for i in range(n)]
    dilations = list(_attr(node, "dilations", [1] * n))
    pads = list(_attr(node, "pads", [0] * 2 * n))
    extra = list(_attr(node, "output_padding", [0] * n))
    return [strides[i] * (x[2 + i] - 1) + extra[i] + (w[2 + i] - 1) * dilations[i] + 1
            - pads[i] - pads[n + i] for i in range(n)]


def _static_dims(proto: Any) -> dict[str, list[int]]:
    values = graph_values(infer(proto).graph)
    return {v.name: dims for v in values if (dims := static_dims(v)) is not None}


def _resize_inexact(node: Any, consts: dict[str, np.ndarray],
                    shapes: dict[str, list[int]]) -> str | None:
    """Why TVM's Resize would compute this node wrongly, or None."""
    if _attr(node, "antialias", 0):
        return "antialias=1 is not supported"
    mode = _attr(node, "mode", b"nearest")
    x, y = node.input[0], node.output[0]
    if x not in shapes or y not in shapes:
        return None  # TVM's importer refuses what it cannot size
    scales = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    axes = _attr(node, "axes")
    for k, (i, o) in enumerate(zip(shapes[x], shapes[y], strict=False)):
        if i == o:
            continue
        if scales is not None and scales.size:
            s = float(scales.reshape(-1)[axes.index(k) if axes else k]) \
                if (not axes or k in axes) else 1.0
            if o != i * s:
                return (f"scale {s:g} does not map size {i} to {o} exactly (TVM samples at "
                        f"{o}/{i}); pass sizes, or scales that divide evenly")
        if mode == b"nearest" and o > i and o % i:
            return (f"nearest upsampling from {i} to {o} (not an integer factor) rounds "
                    "sample positions differently")
    return None
