"""Validation of ONNX models before TVM sees them, under configurable resource limits.

Models come from users who did not write them; a malformed one must end in a
:class:`~lepton_compiler.errors.ModelLoadError` that names the node (or tensor, or file) at
fault, never in a crash, a hang, a huge allocation or a silently wrong import. The checks,
in order, each before anything is allocated from the model's declared sizes:

1. the file (and every external data file) is no larger than ``Limits.max_model_bytes``;
2. structure: node count, unique value names (one producer per value), every node input
   produced earlier or a graph input/initializer (dangling inputs and cycles are named),
   graph outputs produced;
3. tensors: every initializer's dtype, rank, dims (none negative), element count and stored
   byte length agree and are within the limits; external data must be a relative path inside
   the model's folder with offset + length inside the file;
4. declared shapes of inputs, outputs and value infos: rank and element limits, no
   negative dims (zero-size dims are valid ONNX);
5. per node: ``onnx.checker.check_node`` (op known in the opset, attribute types, input
   counts) plus Lepton's attribute rules (positive strides, kernel sizes, dilations and
   groups; non-negative pads; axes inside the rank), each error naming the node;
6. ``onnx.checker.check_model(full_check=True)`` (strict shape inference) on a copy whose
   unnamed nodes carry labels, so its messages name the node too; inferred intermediate
   shapes are held to the same element limit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton_compiler.errors import ModelLoadError

# ONNX TensorProto data types Lepton can import, with their byte sizes.
DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
DTYPE_FIELD = {1: "float_data", 2: "int32_data", 3: "int32_data", 4: "int32_data",
               5: "int32_data",
               6: "int32_data", 7: "int64_data", 9: "int32_data", 10: "int32_data",
               11: "double_data", 12: "uint64_data", 13: "uint64_data", 16: "int32_data"}


@dataclass(frozen=True)
class Limits:
    """Resource limits enforced on a model before anything is allocated from it.

    Attributes
    ----------
    max_model_bytes
        The model file plus its external data files (default 2 GiB).
    max_nodes
        Nodes in the graph (default 100 000).
    max_elements
        Elements of any one tensor: initializers, declared and inferred shapes
        (default 2**28, 1 GiB of float32).
    max_rank
        Dimensions of any tensor (default 8).
    """

    max_model_bytes: int = 2 << 30
    max_nodes: int = 100_000
    max_elements: int = 1 << 28
    max_rank: int = 8

    def __post_init__(self) -> None:
        from lepton_compiler.errors import OptionError

        for name in ("max_model_bytes", "max_nodes", "max_elements", "max_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise OptionError(f"Limits.{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = Limits()


def node_label(node: Any, index: int) -> str:
    """How errors name a node: its name, else its position and op type."""
    return f"node {node.name!r} ({node.op_type})" if node.name \
        else f"node #{index} ({node.op_type})"


def check_file_size(path: Path, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.max_model_bytes:
        raise ModelLoadError(f"{path}: {size} bytes exceeds the model size limit of "
                             f"{limits.max_model_bytes} bytes (Limits.max_model_bytes)")


def validate(proto: Any, where: str, base_dir: Path | None, limits: Limits) -> None:
    """Run every check above on a ModelProto whose external data is not loaded yet; loads
    it (from ``base_dir``) once its locations and sizes are checked."""
    graph = proto.graph
    if len(graph.node) > limits.max_nodes:
        raise ModelLoadError(f"{where}: {len(graph.node)} nodes exceed the limit of "
                             f"{limits.max_nodes} (Limits.max_nodes)")
    _check_structure(graph, where)
    external_bytes = 0
    readers: dict[str, list[str]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(node_label(node, index))
    for tensor in graph.initializer:
        try:
            external_bytes += _check_initializer(tensor, where, base_dir, limits)
        except ModelLoadError as err:
            users = readers.get(tensor.name)
            if not users:
                raise
            shown = ", ".join(users[:3]) + (" ..." if len(users) > 3 else "")
            raise ModelLoadError(f"{err} (read by {shown})") from None
    if external_bytes > limits.max_model_bytes:
        raise ModelLoadError(f"{where}: external data of {external_bytes} bytes exceeds the "
                             f"limit of {limits.max_model_bytes} bytes")
    for kind, values in (("input", graph.input), ("output", graph.output),
                         ("value", graph.value_info)):
        for value in values:
            _check_declared(value, kind, where, limits)
    _check_nodes(proto, where)
    if base_dir is not None and external_bytes:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(proto, str(base_dir))  # locations checked above
    _check_model(proto, where, limits)


def _check_structure(graph: Any, where: str) -> None:
    available = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    produced_by: dict[str, str] = {}
    later: dict[str, str] = {}
    for index, node in enumerate(graph.node):
        for out in node.output:
            if out:
                later.setdefault(out, node_label(node, index))
    for index, node in enumerate(graph.node):
        label = node_label(node, index)
        for name in node.input:
            if not name or name in available:
                continue
            if name in later:
                raise ModelLoadError(
                    f"{where}: {label} reads {name!r} before {later[name]} produces it (a "
                    "cycle, or nodes out of topological order); fix the graph's node order")
            raise ModelLoadError(
                f"{where}: {label} reads {name!r}, which no node, graph input or initializer "
                "provides (a dangling input)")
        for out in node.output:
            if not out:
                continue
            if out in produced_by or out in available:
                first = produced_by.get(out, "a graph input or initializer")
                raise ModelLoadError(
                    f"{where}: {label} writes {out!r}, which {first} already defines; every "
                    "value needs a unique name")
            produced_by[out] = label
            available.add(out)
    for out in graph.output:
        if out.name not in available:
            raise ModelLoadError(f"{where}: graph output {out.name!r} is not produced by any "
                                 "node")


def _elements(dims: Any, what: str, where: str, limits: Limits) -> int:
    if len(dims) > limits.max_rank:
        raise ModelLoadError(f"{where}: {what} has rank {len(dims)}, over the limit of "
                             f"{limits.max_rank} (Limits.max_rank)")
    count = 1
    for d in dims:
        if d < 0:
            raise ModelLoadError(f"{where}: {what} has a negative dimension {list(dims)}")
        count *= d
        if count > limits.max_elements:
            raise ModelLoadError(f"{where}: {what} declares {list(dims)}, more than "
                                 f"{limits.max_elements} elements (Limits.max_elements)")
    return count


def _check_initializer(tensor: Any, where: str, base_dir: Path | None, limits: Limits) -> int:
    """Check one initializer; returns its external data bytes (0 when stored inline)."""
    from onnx import TensorProto

    what = f"initializer {tensor.name!r}"
    if tensor.data_type not in DTYPE_BYTES:
        name = TensorProto.DataType.Name(tensor.data_type) \
            if tensor.data_type in TensorProto.DataType.values() else str(tensor.data_type)
        raise ModelLoadError(f"{where}: {what} has data type {name}, which Lepton does not "
                             "support; use float32, float16 or an integer type")
    count = _elements(tensor.dims, what, where, limits)
    nbytes = count * DTYPE_BYTES[tensor.data_type]
    if tensor.data_location == TensorProto.EXTERNAL:
        return _check_external(tensor, what, nbytes, where, base_dir)
    if tensor.HasField("raw_data"):
        if len(tensor.raw_data) != nbytes:
            raise ModelLoadError(f"{where}: {what} declares {list(tensor.dims)} "
                                 f"({nbytes} bytes) but stores {len(tensor.raw_data)} bytes")
        return 0
    stored = len(getattr(tensor, DTYPE_FIELD[tensor.data_type]))
    if tensor.data_type in (5, 10, 16) and stored * 2 == count:  # some writers pack 16-bit
        return 0
    if stored != count:
        raise ModelLoadError(f"{where}: {what} declares {list(tensor.dims)} ({count} "
                             f"elements) but stores {stored}")
    return 0


def _check_external(tensor: Any, what: str, nbytes: int, where: str,
                    base_dir: Path | None) -> int:
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if base_dir is None:
        raise ModelLoadError(f"{where}: {what} keeps its data in an external file "
                             f"({location!r}); load the model from its path, not from bytes")
    if not location or os.path.isabs(location) or ".." in Path(location).parts:
        raise ModelLoadError(f"{where}: {what} has external data location {location!r}; it "
                             "must be a relative path inside the model's folder")
    root = base_dir.resolve()
    path = (root / location).resolve()
    if root not in path.parents:
        raise ModelLoadError(f"{where}: {what}'s external data {location!r} resolves outside "
                             "the model's folder (a symlink?); refusing to read it")
    if not path.is_file():
        raise ModelLoadError(f"{where}: {what}'s external data file {location!r} is missing")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(nbytes)))
    except ValueError:
        raise ModelLoadError(f"{where}: {what} has a non-numeric external data offset or "
                             "length") from None
    size = path.stat().st_size
    if offset < 0 or length != nbytes or offset + length > size:
        raise ModelLoadError(
            f"{where}: {what}'s external data (offset {offset}, length {length}) does not "
            f"fit: the tensor needs {nbytes} bytes and {location!r} has {size}")
    return length


def _check_declared(value: Any, kind: str, where: str, limits: Limits) -> None:
    what = f"graph {kind} {value.name!r}"
    t = value.type
    if not t.HasField("tensor_type"):
        if kind == "value":
            return
        raise ModelLoadError(f"{where}: {what} is not a tensor; Lepton imports tensor "
                             "inputs and outputs only")
    if t.tensor_type.elem_type not in DTYPE_BYTES and t.tensor_type.elem_type != 0:
        raise ModelLoadError(f"{where}: {what} has an unsupported element type "
                             f"{t.tensor_type.elem_type}")
    if not t.tensor_type.HasField("shape"):
        return
    dims = t.tensor_type.shape.dim
    fixed = []
    for d in dims:
        if d.HasField("dim_value"):
            if d.dim_value < 0:
                raise ModelLoadError(f"{where}: {what} declares dimension {d.dim_value}; "
                                     "dimensions must not be negative")
            fixed.append(d.dim_value)
    _elements(fixed if len(fixed) == len(dims) else [*fixed, *([1] * (len(dims) - len(fixed)))],
              what, where, limits)


POSITIVE_INTS = ("strides", "kernel_shape", "dilations")
# Integer attributes that are flags: runtimes disagree on what 9 means (onnxruntime and TVM
# gave different output ranks for ReduceMean keepdims=9), so only 0 and 1 are accepted.
BOOLEAN_INTS = ("keepdims", "transA", "transB", "allowzero", "ceil_mode", "count_include_pad",
                "noop_with_empty_axes", "select_last_index", "exclusive", "reverse",
                "training_mode", "detect_negative", "detect_positive", "upper")


def _check_nodes(proto: Any, where: str) -> None:
    import onnx

    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = proto.ir_version
    ctx.opset_imports = {o.domain: o.version for o in proto.opset_import}
    lex = onnx.checker.C.LexicalScopeContext()
    for index, node in enumerate(proto.graph.node):
        label = node_label(node, index)
        # A node with subgraphs (If, Loop, Scan) reads outer-scope values that a per-node
        # check cannot see; check_model (below, with scopes) checks it.
        scoped = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                     for a in node.attribute)
        try:
            if not scoped:
                onnx.checker.C.check_node(node.SerializeToString(), ctx, lex)
        except Exception as err:
            raise ModelLoadError(f"{where}: {label} is invalid: {_first_line(err)}") from None
        for attr in node.attribute:
            if attr.name in POSITIVE_INTS and attr.type == onnx.AttributeProto.INTS \
                    and any(v <= 0 for v in attr.ints):
                raise ModelLoadError(f"{where}: {label} has {attr.name}={list(attr.ints)}; "
                                     "every value must be positive")
            if attr.name == "pads" and attr.type == onnx.AttributeProto.INTS \
                    and any(v < 0 for v in attr.ints):
                raise ModelLoadError(f"{where}: {label} has pads={list(attr.ints)}; "
                                     "negative padding is not supported")
            if attr.name in BOOLEAN_INTS and attr.type == onnx.AttributeProto.INT \
                    and attr.i not in (0, 1):
                raise ModelLoadError(f"{where}: {label} has {attr.name}={attr.i}; it is a "
                                     "flag and must be 0 or 1")
            if attr.name == "group" and attr.type == onnx.AttributeProto.INT and attr.i <= 0:
                raise ModelLoadError(f"{where}: {label} has group={attr.i}; it must be "
                                     "positive")


def _check_model(proto: Any, where: str, limits: Limits) -> None:
    import onnx

    labelled = onnx.ModelProto()
    labelled.CopyFrom(proto)
    for index, node in enumerate(labelled.graph.node):
        if not node.name:
            node.name = f"#{index}"
    try:
        onnx.checker.check_model(labelled, full_check=True)
    except Exception as err:
        raise ModelLoadError(f"{where}: fails the ONNX checker: {_first_line(err)}") from None
    try:
        inferred = onnx.shape_inference.infer_shapes(labelled, strict_mode=True)
    except Exception as err:
        raise ModelLoadError(f"{where}: shape inference fails: {_first_line(err)}") from None
    producer = {out: node_label(n, i) for i, n in enumerate(proto.graph.node)
                for out in n.output}
    _check_operands(inferred, where)
    for value in inferred.graph.value_info:
        if not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        fixed = [d.dim_value for d in dims if d.HasField("dim_value")]
        owner = producer.get(value.name, "a node")
        if any(d < 0 for d in fixed):
            raise ModelLoadError(f"{where}: {owner} produces {value.name!r} of shape {fixed}; "
                                 "dimensions must not be negative")
        count = 1
        for d in fixed:
            count *= max(d, 1)
        if count > limits.max_elements or len(dims) > limits.max_rank:
            raise ModelLoadError(f"{where}: {owner} produces {value.name!r} of shape {fixed}, "
                                 f"over the limits ({limits.max_elements} elements, rank "
                                 f"{limits.max_rank})")


def graph_values(graph: Any) -> list[Any]:
    """The ValueInfoProtos a graph declares or inference added: inputs, value infos,
    outputs."""
    return [*graph.input, *graph.value_info, *graph.output]


def static_dims(value: Any) -> list[int] | None:
    """The fully known dims of a tensor value (``[]`` for a scalar), or None."""
    t = value.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims = t.tensor_type.shape.dim
    return [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) else None


def _shapes(model: Any) -> dict[str, list[int]]:
    """Fully known static shapes of the model's non-scalar values after inference."""
    shapes = {}
    for value in graph_values(model.graph):
        dims = static_dims(value)
        if dims:
            shapes[value.name] = dims
    for tensor in model.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    return shapes


def _check_operands(model: Any, where: str) -> None:
    """Operand agreements ONNX shape inference leaves unchecked (it infers Conv's output
    from the weight alone)."""
    shapes = _shapes(model)
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if x is None or w is None or len(x) != len(w) or len(x) < 3:
            continue
        if x[1] != w[1] * group or w[0] % group:
            raise ModelLoadError(
                f"{where}: {node_label(node, index)}: input {node.input[0]!r} has {x[1]} "
                f"channels but weight {node.input[1]!r} {w} with group={group} expects "
                f"{w[1] * group} (and output channels divisible by the group)")
        if len(node.input) > 2 and node.input[2]:
            b = shapes.get(node.input[2])
            if b is not None and b != [w[0]]:
                raise ModelLoadError(f"{where}: {node_label(node, index)}: bias "
                                     f"{node.input[2]!r} has shape {b}, expected [{w[0]}]")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
