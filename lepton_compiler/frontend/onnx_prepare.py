"""ONNX graph preparation before TVM's importer: function expansion, pinned shape inputs,
and constant folding at the example's static shapes.

TVM's ONNX importer needs every value that decides a shape (Reshape's target, Resize's
sizes, the axes of a reduction, TopK's k, Shape/Size chains) as a constant, and it has no
converter for many ONNX ops that the standard defines as functions of other ops. Three
rewrites, in order, close most of that gap without changing what the model computes:

1. :func:`expand_functions` replaces a node whose op TVM cannot import (or imports wrongly,
   :data:`PREFER_EXPANSION`) by the body of its ONNX *function* definition (e.g.
   ``Attention``, ``RotaryEmbedding``, ``NegativeLogLikelihoodLoss``, ``Swish``), taken at
   the model's opset (context-dependent bodies are instantiated with the node's input
   types). A body whose ops mean something else at the model's opset is not used.
2. :func:`pin_inputs` turns a graph input that only decides shapes into a constant holding
   the example input's value. The compiled model still takes that input and checks at every
   call that it holds the same value (``InputError`` otherwise): the artifact computes the
   model exactly for that value and refuses any other, never a silent wrong answer.
3. :func:`fold_constants` evaluates, with ``onnx.reference`` (the ONNX reference
   implementation), every node whose inputs are all constants, and ``Shape``/``Size`` of
   values whose shapes are static, after shape inference at the example's input shapes;
   their outputs become initializers. A zero-size value counts as a constant (its value is
   its shape), so an op over an empty input (a reduction's identity, a concat of nothing)
   is folded too; an ``If`` whose condition folds is replaced by the branch it takes.
   Repeated until nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lepton_compiler.frontend.onnx_validate import graph_values, static_dims

#: Ops TVM 0.27 imports wrongly (``Mish``: wrong values; ``Attention``: its converter is
#: the com.microsoft contrib op's, which fails on ONNX's own); their function bodies are used.
PREFER_EXPANSION = frozenset({"Mish", "Attention"})

#: Inputs (by position) that decide an output shape or act as an attribute (Pad's value,
#: Dropout's ratio and training mode, OneHot's values): TVM's importer needs them as
#: constants. A graph input feeding one of these is pinned to its example value.
SHAPE_OPERANDS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Pad": (1, 2, 3), "Resize": (1, 2, 3),
    "Upsample": (1,), "TopK": (1,), "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,),
    "ReduceMin": (1,), "ReduceProd": (1,), "ReduceL1": (1,), "ReduceL2": (1,),
    "ReduceLogSum": (1,), "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,), "Squeeze": (1,),
    "Unsqueeze": (1,), "Slice": (1, 2, 3, 4), "Split": (1,), "CumSum": (1,), "OneHot": (1, 2),
    "Range": (0, 1, 2), "ConstantOfShape": (0,), "Trilu": (1,), "CenterCropPad": (1,),
    "NonMaxSuppression": (2, 3, 4), "Col2Im": (1, 2),
    "AffineGrid": (1,), "BlackmanWindow": (0,), "HannWindow": (0,), "HammingWindow": (0,),
    "DFT": (1, 2), "STFT": (1, 2, 3), "MelWeightMatrix": (0, 1, 2, 3, 4),
    "Dropout": (1, 2),
}
#: Pinned inputs hold at most this many elements (shape vectors, axes, scales, counts).
MAX_PINNED_ELEMENTS = 4096
#: Folded values hold at most this many elements (larger stay computed at run time).
MAX_FOLDED_ELEMENTS = 1 << 22
#: Ops never folded: their outputs are random, or they hold subgraphs.
NOT_FOLDED = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike",
                        "RandomUniformLike", "Bernoulli", "Multinomial", "If", "Loop", "Scan",
                        "SequenceMap", "Dropout"})


#: Initializers up to this many elements stay in the copy shape inference reads (its data
#: propagation needs small constants); larger ones are declared as typed inputs instead.
_INFER_KEEPS_ELEMENTS = 4096


def infer(proto: Any, data_prop: bool = False) -> Any:
    """ONNX shape inference on a copy of ``proto`` without its large weights (inference
    serialises the whole model: on a 400 MB model each call took seconds), or ``proto``
    itself when inference fails (a best effort here; validation ran the strict check)."""
    import onnx

    light = onnx.ModelProto()
    light.ir_version = proto.ir_version
    light.opset_import.extend(proto.opset_import)
    light.functions.extend(proto.functions)
    graph = light.graph
    graph.node.extend(proto.graph.node)
    graph.input.extend(proto.graph.input)
    graph.output.extend(proto.graph.output)
    graph.value_info.extend(proto.graph.value_info)
    declared = {i.name for i in proto.graph.input}
    for t in proto.graph.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) <= _INFER_KEEPS_ELEMENTS:
            graph.initializer.append(t)
        elif t.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type,
                                                                  list(t.dims)))
    try:
        return onnx.shape_inference.infer_shapes(light, data_prop=data_prop)
    except Exception:
        return light


def model_opset(proto: Any, domain: str = "") -> int:
    """The model's opset version for ``domain`` (the default ONNX domain by default)."""
    for o in proto.opset_import:
        if (o.domain or "") in ({domain} if domain else {"", "ai.onnx"}):
            return o.version
    return 1


# -- 1. function expansion ---------------------------------------------------------------------

def value_types(proto: Any) -> dict[str, Any]:
    """TypeProto of every value ONNX shape inference can type (initializers included)."""
    import onnx

    types = {v.name: v.type for v in graph_values(infer(proto).graph)}
    for t in proto.graph.initializer:
        types[t.name] = onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims))
    return types


def _function_for(node: Any, opset: int, types: dict[str, Any]) -> Any | None:
    """The FunctionProto defining ``node`` at ``opset``, or None."""
    import onnx
    from onnx import defs

    try:
        schema = defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:
        return None
    versions = [(v, False) for v in schema.function_opset_versions if v <= opset]
    versions += [(v, True) for v in schema.context_dependent_function_opset_versions
                 if v <= opset]
    if not versions:
        return None
    version, dependent = max(versions)
    if dependent:
        if any(name and name not in types for name in node.input):
            return None
        filled = onnx.NodeProto()
        filled.CopyFrom(node)
        present = {a.name for a in node.attribute}
        for name, attr in schema.attributes.items():  # the body reads defaults off the node
            if name not in present and attr.default_value.name:
                filled.attribute.append(attr.default_value)
        empty = onnx.TypeProto()
        raw = schema.get_context_dependent_function_with_opset_version(
            version, filled.SerializeToString(),
            [(types[n] if n else empty).SerializeToString() for n in node.input])
    else:
        raw = schema.get_function_with_opset_version(version)
    function = onnx.FunctionProto()
    function.ParseFromString(raw)
    if not _same_meaning(function, opset):
        return None
    return function


def _same_meaning(function: Any, opset: int) -> bool:
    """Whether every op of ``function``'s body has the same definition at ``opset`` as at the
    opset the body was written for (ops change meaning between opsets, e.g. ReduceMean's
    axes moved from an attribute to an input)."""
    from onnx import defs

    written = next((o.version for o in function.opset_import if o.domain in ("", "ai.onnx")),
                   opset)
    for node in function.node:
        if node.domain not in ("", "ai.onnx") or any(a.HasField("g") or a.graphs
                                                    for a in node.attribute):
            return False
        try:
            then, now = defs.get_schema(node.op_type, written), defs.get_schema(node.op_type,
                                                                                 opset)
        except Exception:
            return False
        if then.since_version != now.since_version and not _same_signature(then, now):
            return False
    return True


def _same_signature(then: Any, now: Any) -> bool:
    """Whether two versions of an op differ at most in the element types they accept (new
    opsets mostly add types; a change of meaning shows in the attributes or inputs, e.g.
    ReduceMean's axes moving from an attribute to an input)."""
    return set(then.attributes) == set(now.attributes) and \
        [p.name for p in then.inputs] == [p.name for p in now.inputs] and \
        [p.name for p in then.outputs] == [p.name for p in now.outputs]


def _inline(node: Any, function: Any, prefix: str, schema_defaults: dict[str, Any]) -> list:
    """The body of ``function`` with its formal inputs/outputs renamed to ``node``'s, internal
    values prefixed, and attribute references resolved from the node (or defaults)."""
    import onnx

    names = {formal: (node.input[i] if i < len(node.input) else "")
             for i, formal in enumerate(function.input)}
    for i, formal in enumerate(function.output):
        if i < len(node.output) and node.output[i]:
            names[formal] = node.output[i]
    given = {a.name: a for a in node.attribute}

    def rename(name: str) -> str:
        if not name:
            return ""
        return names.get(name, prefix + name)

    body = []
    for k, inner in enumerate(function.node):
        new = onnx.NodeProto()
        new.CopyFrom(inner)
        new.name = prefix + (inner.name or f"{inner.op_type}{k}")
        del new.input[:]
        new.input.extend(rename(n) for n in inner.input)
        del new.output[:]
        new.output.extend(rename(n) for n in inner.output)
        del new.attribute[:]
        for attr in inner.attribute:
            if attr.ref_attr_name:
                source = given.get(attr.ref_attr_name) or schema_defaults.get(attr.ref_attr_name)
                if source is None:
                    continue  # an optional attribute the node leaves unset
                resolved = onnx.AttributeProto()
                resolved.CopyFrom(source)
                resolved.name = attr.name
                new.attribute.append(resolved)
            else:
                new.attribute.append(attr)
        body.append(new)
    return body


def expand_functions(proto: Any, importable: set[str], max_rounds: int = 4) -> Any:
    """``proto`` with every node TVM cannot import (op not in ``importable``) or imports
    wrongly (:data:`PREFER_EXPANSION`) replaced by its ONNX function body, where the op has
    one at the model's opset; nodes without one are left for the unsupported-op report."""
    import onnx
    from onnx import defs

    opset = model_opset(proto)
    for _round in range(max_rounds):
        wanted = [n for n in proto.graph.node if n.domain in ("", "ai.onnx") and
                  (n.op_type not in importable or n.op_type in PREFER_EXPANSION)]
        if not wanted:
            return proto
        types = value_types(proto)
        out = onnx.ModelProto()
        out.CopyFrom(proto)
        del out.graph.node[:]
        changed = False
        for index, node in enumerate(proto.graph.node):
            function = _function_for(node, opset, types) if node in wanted else None
            if function is None:
                out.graph.node.append(node)
                continue
            schema = defs.get_schema(node.op_type, opset, node.domain or "")
            defaults = {k: a.default_value for k, a in schema.attributes.items()
                        if a.default_value.name}
            prefix = f"{node.name or node.op_type}@{_round}.{index}/"
            out.graph.node.extend(_inline(node, function, prefix, defaults))
            changed = True
        proto = out
        if not changed:
            return proto
    return proto


# -- 2. pinned inputs --------------------------------------------------------------------------

def shape_inputs(proto: Any) -> dict[str, str]:
    """Graph inputs whose values reach a shape operand (:data:`SHAPE_OPERANDS`), with the
    node that reads them (e.g. ``{"shape": "node 'r' (Reshape)"}``). The walk goes backwards
    from each operand through producing nodes and stops at Shape/Size (which read only a
    shape, not values)."""
    from lepton_compiler.frontend.onnx_validate import node_label

    initializers = {t.name for t in proto.graph.initializer}
    inputs = {i.name for i in proto.graph.input if i.name not in initializers}
    producer = {out: node for node in proto.graph.node for out in node.output if out}
    found: dict[str, str] = {}
    for index, node in enumerate(proto.graph.node):
        positions = SHAPE_OPERANDS.get(node.op_type, ())
        stack = [node.input[p] for p in positions if p < len(node.input) and node.input[p]]
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in inputs:
                found.setdefault(name, node_label(node, index))
            elif name in producer and producer[name].op_type not in ("Shape", "Size"):
                stack.extend(n for n in producer[name].input if n)
    return found


def pin_inputs(proto: Any, examples: Sequence[Any] | None) -> tuple[Any, dict[str, np.ndarray],
                                                                      dict[str, str]]:
    """Pin shape-deciding graph inputs to their example values (see the module docstring),
    and empty inputs (zero elements: their value is their shape, so the pin checks only that).

    Returns the rewritten model, ``{input name: pinned value}`` and ``{input name: the node
    that needs it}`` for inputs that need a value but have no example (or a large one).
    """
    import onnx
    from onnx import numpy_helper

    wanted = shape_inputs(proto)
    initializers = {t.name for t in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    for position, value in enumerate(graph_inputs):  # an empty input's value is its shape
        if examples is not None and position < len(examples) and \
                np.size(examples[position]) == 0:
            wanted.setdefault(value.name, "an empty tensor")
    if not wanted:
        return proto, {}, {}
    pinned: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    for position, value in enumerate(graph_inputs):
        if value.name not in wanted:
            continue
        if examples is None or position >= len(examples):
            missing[value.name] = wanted[value.name]
            continue
        array = np.asarray(examples[position])
        declared = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") \
            else 0
        if array.size > MAX_PINNED_ELEMENTS or (declared and array.dtype != np.dtype(
                onnx.helper.tensor_dtype_to_np_dtype(declared))):
            missing[value.name] = wanted[value.name]  # e.g. zeros standing in for a value
            continue
        pinned[value.name] = np.array(array, copy=True)
    if not pinned:
        return proto, {}, missing
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    kept = [i for i in out.graph.input if i.name not in pinned]
    del out.graph.input[:]
    out.graph.input.extend(kept)
    for name, array in pinned.items():
        out.graph.initializer.append(numpy_helper.from_array(array, name))
    return out, pinned, missing


# -- 3. constant folding -----------------------------------------------------------------------

def _static_shapes(proto: Any) -> tuple[dict[str, list[int]], dict[str, np.ndarray]]:
    """Static shapes of the model's values after inference, and the values that are empty
    (a zero-size tensor's value is its shape and dtype: nothing to compute)."""
    import onnx

    shapes, empty = {}, {}
    for value in graph_values(infer(proto, data_prop=True).graph):
        t = value.type
        dims = static_dims(value)
        if dims is not None:
            shapes[value.name] = dims
            if 0 in dims:
                try:
                    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type)
                except Exception:
                    continue
                empty[value.name] = np.zeros(shapes[value.name], dtype)
    return shapes, empty


def _shape_value(node: Any, shape: list[int]) -> np.ndarray:
    """Shape (with start/end) or Size of a tensor of static ``shape``."""
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    rank = len(shape)
    start, end = attrs.get("start", 0), attrs.get("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return np.array(shape[start:end], dtype=np.int64)


def _evaluate(node: Any, values: list[Any], opset: int) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    try:
        evaluator = ReferenceEvaluator(node, opsets={"": opset})
        feeds = {name: v for name, v in zip(node.input, values, strict=True) if name}
        return list(evaluator.run(None, feeds))
    except Exception:  # the op is not foldable here; TVM (or the op report) takes it
        return None


def fold_constants(proto: Any, max_rounds: int = 8) -> Any:
    """``proto`` with constant-computable nodes replaced by initializers (see the module
    docstring). Graph inputs must carry static shapes (set them first)."""
    import onnx
    from onnx import numpy_helper

    opset = model_opset(proto)
    for _round in range(max_rounds):
        known = {t.name: t for t in proto.graph.initializer}
        if not _may_fold(proto, known):
            return proto
        proto = inline_constant_ifs(proto)
        known = {t.name: t for t in proto.graph.initializer}
        shapes, empty = _static_shapes(proto)
        folded: dict[str, np.ndarray] = {}
        keep = []
        arrays: dict[str, np.ndarray] = {}  # initializers read so far, as arrays

        def value(name: str, known: dict = known, folded: dict = folded,
                  arrays: dict = arrays) -> np.ndarray:
            if name in folded:
                return folded[name]
            if name not in arrays:
                arrays[name] = numpy_helper.to_array(known[name])
            return arrays[name]

        for node in proto.graph.node:
            result = None
            if node.domain not in ("", "ai.onnx") or node.op_type in NOT_FOLDED:
                pass
            elif all(o in empty for o in node.output if o):
                result = [empty[o] for o in node.output if o]
            elif node.op_type in ("Shape", "Size") and node.input[0] in shapes:
                result = [_shape_value(node, shapes[node.input[0]])]
            elif all(not n or n in known or n in folded for n in node.input):
                result = _evaluate(node, [value(n) if n else None for n in node.input], opset)
            if result is None or len(result) < len([o for o in node.output if o]) or any(
                    not isinstance(r, np.ndarray) or r.size > MAX_FOLDED_ELEMENTS
                    or r.dtype == object for r in result):
                keep.append(node)
                continue
            for name, array in zip(node.output, result, strict=False):
                if name:
                    folded[name] = array
        if not folded:
            return proto
        out = onnx.ModelProto()
        out.CopyFrom(proto)
        del out.graph.node[:]
        out.graph.node.extend(keep)
        used = {n for node in keep for n in _reads(node)} | {o.name for o in out.graph.output}
        for name, array in folded.items():
            if name in used:
                out.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        proto = out
    return proto


def _reads(node: Any) -> set[str]:
    """Every value ``node`` reads: its inputs and the outer-scope names its subgraphs use."""
    names = set(node.input)
    for attr in node.attribute:
        for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in graph.node:
                names |= _reads(inner)
    return names


def inline_constant_ifs(proto: Any) -> Any:
    """``proto`` with every ``If`` whose condition is a constant replaced by the branch it
    takes (its values renamed apart; outer-scope names kept). Exporters emit such Ifs on
    shape tests, which fold once the shapes are static; a static plan cannot branch."""
    import onnx
    from onnx import helper, numpy_helper

    known = {t.name: t for t in proto.graph.initializer}
    ifs = [i for i, n in enumerate(proto.graph.node) if n.op_type == "If" and
           n.domain in ("", "ai.onnx") and n.input and n.input[0] in known]
    if not ifs:
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.node[:]
    for index, node in enumerate(proto.graph.node):
        cond = numpy_helper.to_array(known[node.input[0]]) if index in ifs else None
        if cond is None or cond.size != 1:
            out.graph.node.append(node)
            continue
        branch = next(a.g for a in node.attribute
                      if a.name == ("then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"))
        if any(a.HasField("g") or a.graphs for n in branch.node for a in n.attribute):
            out.graph.node.append(node)  # nested subgraphs: left to the importer
            continue
        prefix = f"{node.name or 'If'}@{index}/"
        defined = {o for n in branch.node for o in n.output if o} | \
            {t.name for t in branch.initializer}

        def rename(name: str, defined: set = defined, prefix: str = prefix) -> str:
            return prefix + name if name in defined else name

        for tensor in branch.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            copy.name = rename(tensor.name)
            out.graph.initializer.append(copy)
        for k, inner in enumerate(branch.node):
            new = onnx.NodeProto()
            new.CopyFrom(inner)
            new.name = prefix + (inner.name or f"{inner.op_type}{k}")
            del new.input[:]
            new.input.extend(rename(n) if n else "" for n in inner.input)
            del new.output[:]
            new.output.extend(rename(n) if n else "" for n in inner.output)
            out.graph.node.append(new)
        for name, result in zip(node.output, branch.output, strict=False):
            if name:
                out.graph.node.append(helper.make_node("Identity", [rename(result.name)],
                                                       [name], name=f"{prefix}{name}"))
    return out


def _may_fold(proto: Any, known: dict) -> bool:
    """Cheap pre-check: a Shape/Size node, a node whose inputs are all constants, or a
    declared zero-size dim (most models have none: no shape inference needed)."""
    for node in proto.graph.node:
        if node.op_type in ("Shape", "Size", "Constant") or all(
                not n or n in known for n in node.input):
            return True
    values = [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]
    return any(d.HasField("dim_value") and d.dim_value == 0 for v in values
               if v.type.HasField("tensor_type") for d in v.type.tensor_type.shape.dim)


def with_input_shapes(proto: Any, shapes: dict[str, list[int]]) -> Any:
    """A copy of ``proto`` whose graph inputs declare ``shapes`` (name -> dims)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for value in out.graph.input:
        if value.name in shapes and value.type.HasField("tensor_type"):
            dims = value.type.tensor_type.shape
            dims.ClearField("dim")
            for d in shapes[value.name]:
                dims.dim.add().dim_value = int(d)
    return out
