"""ONNX graph rewrites applied before TVM's importer sees a model, where that importer is wrong.

``expand_layer_norm_stats``: TVM 0.27's ``LayerNormalization`` importer returns constant
zeros for the optional ``Mean`` and ``InvStdDev`` outputs (a silent wrong answer, and a crash
further on). A ``LayerNormalization`` whose statistics are used is rewritten into the ops
of its ONNX definition::

    Mean = ReduceMean(X, axes=[axis, ..., rank-1], keepdims=1)
    D = X - Mean
    InvStdDev = Reciprocal(Sqrt(ReduceMean(D * D) + epsilon))
    Y = D * InvStdDev * Scale (+ B)

for float32 inputs (the stash type is float32, so no casts); other input types with used
statistics are refused with the node named. Nodes that use only ``Y`` are left to TVM.
"""

from __future__ import annotations

from typing import Any

from lepton_compiler.errors import ModelLoadError
from lepton_compiler.frontend.onnx_prepare import infer


def expand_layer_norm_stats(proto: Any) -> Any:
    """``proto`` with every LayerNormalization whose Mean/InvStdDev are used expanded (see
    the module docstring); ``proto`` itself when there is none."""
    import onnx
    from onnx import TensorProto, helper

    nodes = list(proto.graph.node)
    wanted = [i for i, n in enumerate(nodes) if n.op_type == "LayerNormalization"
              and n.domain in ("", "ai.onnx") and any(o for o in list(n.output)[1:])]
    if not wanted:
        return proto
    inferred = infer(proto)
    types = {v.name: v.type.tensor_type for v in list(inferred.graph.value_info) +
             list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: None for t in proto.graph.initializer})
    ranks = {t.name: len(t.dims) for t in proto.graph.initializer}
    dtypes = {t.name: t.data_type for t in proto.graph.initializer}
    for name, tt in types.items():
        if tt is not None and tt.HasField("shape"):
            ranks[name] = len(tt.shape.dim)
            dtypes[name] = tt.elem_type
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.node[:]
    for index, node in enumerate(nodes):
        if index not in wanted:
            out.graph.node.append(node)
            continue
        label = f"node {node.name or '#' + str(index)} (LayerNormalization)"
        x = node.input[0]
        if dtypes.get(x) != TensorProto.FLOAT or x not in ranks:
            raise ModelLoadError(
                f"ONNX model: {label} uses its Mean/InvStdDev outputs on a "
                f"{'non-float32' if x in ranks else 'rank-unknown'} input; Lepton computes "
                "them for float32 inputs of known rank only")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        rank = ranks[x]
        axis = int(attrs.get("axis", -1))
        axis = axis + rank if axis < 0 else axis
        axes = list(range(axis, rank))
        eps = float(attrs.get("epsilon", 1e-5))
        p = f"{node.name or 'layer_norm'}_{index}_"
        mean = node.output[1] if len(node.output) > 1 and node.output[1] else p + "mean"
        inv = node.output[2] if len(node.output) > 2 and node.output[2] else p + "inv_std"

        axes_name = p + "axes"

        def reduce_mean(src: str, dst: str, axes: list[int] = axes,
                        axes_name: str = axes_name) -> Any:
            if opset >= 18:  # axes are an input from opset 18 on
                return helper.make_node("ReduceMean", [src, axes_name], [dst], keepdims=1)
            return helper.make_node("ReduceMean", [src], [dst], axes=axes, keepdims=1)

        new = [helper.make_node("Constant", [], [axes_name],
                                value=helper.make_tensor(axes_name, TensorProto.INT64,
                                                         [len(axes)], axes))] if opset >= 18 else []
        new.append(reduce_mean(x, mean))
        new.append(helper.make_node("Sub", [x, mean], [p + "d"]))
        new.append(helper.make_node("Mul", [p + "d", p + "d"], [p + "d2"]))
        new.append(reduce_mean(p + "d2", p + "var"))
        new.append(helper.make_node("Constant", [], [p + "eps"],
                                    value=helper.make_tensor(p + "eps", TensorProto.FLOAT, [],
                                                             [eps])))
        new.append(helper.make_node("Add", [p + "var", p + "eps"], [p + "var_eps"]))
        new.append(helper.make_node("Sqrt", [p + "var_eps"], [p + "std"]))
        new.append(helper.make_node("Reciprocal", [p + "std"], [inv]))
        new.append(helper.make_node("Mul", [p + "d", inv], [p + "normed"]))
        has_bias = len(node.input) > 2 and node.input[2]
        new.append(helper.make_node("Mul", [p + "normed", node.input[1]],
                                    [p + "scaled" if has_bias else node.output[0]]))
        if has_bias:
            new.append(helper.make_node("Add", [p + "scaled", node.input[2]],
                                        [node.output[0]]))
        out.graph.node.extend(new)
    return out


__all__ = ["expand_layer_norm_stats"]
