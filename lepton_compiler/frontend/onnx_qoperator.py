"""ONNX QOperator models (QLinearConv, QLinearMatMul, and onnxruntime's QGemm and QLinearAdd)
as the equivalent QDQ graph, which the importer and the pre-quantized int8 path understand.

An operator with quantized inputs and outputs is, by definition, its float operator between
DequantizeLinear on each input and QuantizeLinear on its output::

    QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B)
      == QuantizeLinear(Conv(DQ(x, xs, xz), DQ(w, ws, wz, axis=0), DQ(B, xs * ws, 0)), ys, yz)

so a model quantized in QOperator format compiles to the same int8 NPU layers, with its own
scales and zero points, as its QDQ twin. TVM 0.27 has no importer for these operators.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: What this module rewrites: (domain, op type).
QOPERATORS = {("", "QLinearConv"), ("", "QLinearMatMul"), ("com.microsoft", "QGemm"),
              ("com.microsoft", "QLinearAdd")}
#: Data movement a QOperator model applies to quantized tensors directly; it keeps the
#: quantization, so it becomes DQ -> op -> Q with the same scale and zero point.
SCALE_PRESERVING = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool",
                    "Slice", "Identity")


def has_qoperators(proto: Any) -> bool:
    return any((n.domain or "", n.op_type) in QOPERATORS for n in proto.graph.node)


def expand_qoperators(proto: Any) -> Any:
    """A copy of ``proto`` with every QOperator node replaced by DQ -> float op -> Q."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes: list[Any] = []
    counter = [0]

    def fresh(base: str) -> str:
        counter[0] += 1
        return f"{base}__lepton_q{counter[0]}"

    def dq(name: str, scale: str, zero: str | None, axis: int | None, label: str) -> str:
        out = fresh(f"{label}_dq")
        inputs = [name, scale] + ([zero] if zero else [])
        kwargs = {"axis": axis} if axis is not None else {}
        nodes.append(helper.make_node("DequantizeLinear", inputs, [out], name=out, **kwargs))
        return out

    def q(name: str, scale: str, zero: str | None, output: str, label: str) -> None:
        inputs = [name, scale] + ([zero] if zero else [])
        nodes.append(helper.make_node("QuantizeLinear", inputs, [output], name=fresh(label)))

    def bias(b: str, scale_a: str, scale_b: str, label: str) -> str:
        """The int32 bias dequantized with scale ``scale_a * scale_b`` (constants)."""
        if scale_a not in inits or scale_b not in inits:
            raise ValueError(f"{label}: the bias scale must come from constant input and "
                             "weight scales")
        product = (numpy_helper.to_array(inits[scale_a]).astype(np.float32)
                   * numpy_helper.to_array(inits[scale_b]).astype(np.float32))
        name = fresh(f"{label}_bias_scale")
        tensor = numpy_helper.from_array(product.astype(np.float32), name)
        graph.initializer.append(tensor)
        inits[name] = tensor
        return dq(b, name, None, 0 if product.ndim else None, label)

    def per_axis(scale: str, axis: int) -> int | None:
        arr = numpy_helper.to_array(inits[scale]) if scale in inits else None
        return axis if arr is not None and arr.ndim == 1 and arr.size > 1 else None

    quantized: dict[str, tuple[str, str | None]] = {}  # quantized tensor -> (scale, zp)
    for node in graph.node:
        kind = (node.domain or "", node.op_type)
        if node.op_type == "QuantizeLinear":
            quantized[node.output[0]] = (node.input[1], node.input[2]
                                         if len(node.input) > 2 and node.input[2] else None)
        if kind not in QOPERATORS:
            if node.op_type in SCALE_PRESERVING and node.input and \
                    node.input[0] in quantized:
                scale, zero = quantized[node.input[0]]
                moved = onnx.NodeProto()
                moved.CopyFrom(node)
                moved.input[0] = dq(node.input[0], scale, zero, None, node.name or node.op_type)
                moved.output[0] = fresh(f"{node.name or node.op_type}_float")
                nodes.append(moved)
                q(moved.output[0], scale, zero, node.output[0], node.name or node.op_type)
                quantized[node.output[0]] = (scale, zero)
            else:
                nodes.append(node)
            continue
        label = node.name or node.op_type
        ins = list(node.input) + [""] * 9
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "QLinearConv":
            x = dq(ins[0], ins[1], ins[2] or None, None, label)
            w = dq(ins[3], ins[4], ins[5] or None, per_axis(ins[4], 0), label)
            conv_in = [x, w] + ([bias(ins[8], ins[1], ins[4], label)] if ins[8] else [])
            y = fresh(f"{label}_float")
            nodes.append(helper.make_node("Conv", conv_in, [y], name=fresh(label), **attrs))
            q(y, ins[6], ins[7] or None, node.output[0], label)
            quantized[node.output[0]] = (ins[6], ins[7] or None)
        elif node.op_type == "QLinearMatMul":
            a = dq(ins[0], ins[1], ins[2] or None, None, label)
            b = dq(ins[3], ins[4], ins[5] or None, per_axis(ins[4], 1), label)
            y = fresh(f"{label}_float")
            nodes.append(helper.make_node("MatMul", [a, b], [y], name=fresh(label)))
            q(y, ins[6], ins[7] or None, node.output[0], label)
            quantized[node.output[0]] = (ins[6], ins[7] or None)
        elif node.op_type == "QGemm":
            trans_b = int(attrs.get("transB", 0))
            a = dq(ins[0], ins[1], ins[2] or None, None, label)
            b = dq(ins[3], ins[4], ins[5] or None, per_axis(ins[4], 0 if trans_b else 1), label)
            gemm_in = [a, b] + ([bias(ins[6], ins[1], ins[4], label)] if ins[6] else [])
            gemm_attrs = {k: v for k, v in attrs.items() if k in ("alpha", "transA", "transB")}
            if ins[7]:
                y = fresh(f"{label}_float")
                nodes.append(helper.make_node("Gemm", gemm_in, [y], name=fresh(label),
                                              **gemm_attrs))
                q(y, ins[7], ins[8] or None, node.output[0], label)
                quantized[node.output[0]] = (ins[7], ins[8] or None)
            else:  # no output scale: a float output
                nodes.append(helper.make_node("Gemm", gemm_in, [node.output[0]],
                                              name=fresh(label), **gemm_attrs))
        else:  # QLinearAdd
            a = dq(ins[0], ins[1], ins[2] or None, None, label)
            b = dq(ins[3], ins[4], ins[5] or None, None, label)
            y = fresh(f"{label}_float")
            nodes.append(helper.make_node("Add", [a, b], [y], name=fresh(label)))
            q(y, ins[6], ins[7] or None, node.output[0], label)
            quantized[node.output[0]] = (ins[6], ins[7] or None)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(n.domain == "com.microsoft" for n in graph.node):
        keep = [o for o in model.opset_import if o.domain != "com.microsoft"]
        del model.opset_import[:]
        model.opset_import.extend(keep)
    for opset in model.opset_import:  # per-axis DequantizeLinear needs opset 13
        if opset.domain in ("", "ai.onnx") and opset.version < 13:
            opset.version = 13
    return model
