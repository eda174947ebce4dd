"""Frontends: PyTorch modules (via torch.export) and ONNX models into Relax.

Both return an :class:`ImportedModel`: a Relax ``IRModule`` whose ``main`` takes the user
inputs (weights bound as constants) plus the input and output names. Every unsupported
operator is reported at once in one :class:`UnsupportedOperatorError`.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lepton_compiler.errors import (
    LeptonError,
    ModelLoadError,
    OptionError,
    UnsupportedOperatorError,
)
from lepton_compiler.frontend import (
    onnx_exact,
    onnx_prepare,
    onnx_qoperator,
    onnx_rewrites,
    torch_quant,
)

logger = logging.getLogger(__name__)


@dataclass
class ImportedModel:
    """A model in Relax with the names of its inputs and outputs."""

    mod: Any  # tvm.IRModule
    input_names: list[str]
    output_names: list[str]
    source: str  # "torch" or "onnx"
    #: The model's node names per op type in graph order (ONNX), for run-time error messages.
    node_names: dict[str, list[str]] = field(default_factory=dict)
    #: Inputs fixed at build time to their example values (ONNX inputs that decide shapes):
    #: ``main`` takes them but does not read them; the runtime checks every call's value.
    pinned: dict[str, np.ndarray] = field(default_factory=dict)


def is_torch_module(model: object) -> bool:
    """True for a ``torch.nn.Module`` (without importing torch when it is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def import_model(model: object, example_inputs: Sequence[Any] | None,
                 limits: Any = None) -> ImportedModel:
    """Import a torch module, an ONNX path/bytes/ModelProto into Relax (ONNX models are
    validated under ``limits`` first)."""
    if is_torch_module(model):
        if example_inputs is None:
            raise OptionError("a PyTorch model needs example_inputs to trace it with torch.export")
        return from_torch(model, example_inputs)
    if isinstance(model, (str, os.PathLike, bytes, bytearray)) or _is_onnx_proto(model):
        return from_onnx(model, example_inputs, limits)
    raise OptionError(
        f"cannot compile a {type(model).__name__}: pass a torch.nn.Module, an ONNX file path, "
        "ONNX bytes or an onnx.ModelProto"
    )


# -- PyTorch ----------------------------------------------------------------------------------


def _to_torch_inputs(example_inputs: Sequence[Any]) -> tuple:
    import torch

    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    out = []
    for i, value in enumerate(example_inputs):
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise OptionError(
                f"example input {i} is a {type(value).__name__}; pass torch tensors or numpy arrays"
            )
        out.append(value)
    return tuple(out)


def from_torch(module: Any, example_inputs: Sequence[Any]) -> ImportedModel:
    """Import a ``torch.nn.Module`` through ``torch.export`` (inference mode, weights bound)."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    inputs = _to_torch_inputs(example_inputs)
    try:
        module = module.eval()
    except NotImplementedError:  # an exported graph (a PT2E model) has no train/eval switch
        pass
    try:
        with torch.no_grad():
            program = torch.export.export(module, inputs)
        program = program.run_decompositions()
    except Exception as err:  # torch raises many types here; report them as one clear error
        raise ModelLoadError(
            f"torch.export could not trace {type(module).__name__}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    quantized_ops = torch_quant.convert_map()  # PT2E quantized exports
    supported = set(ExportedProgramImporter().create_convert_map()) | set(quantized_ops)
    missing: dict[str, list[str]] = defaultdict(list)
    for node in program.graph.nodes:
        if node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target))
            if name not in supported:
                missing[name].append(node.name)
    if missing:
        raise UnsupportedOperatorError("PyTorch", missing)
    try:
        mod = from_exported_program(program, keep_params_as_input=False,
                                    run_ep_decomposition=False,
                                    custom_convert_map=quantized_ops)
    except Exception as err:
        raise ModelLoadError(
            f"importing {type(module).__name__} into Relax failed: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    sig = program.graph_signature
    input_names = [s.arg.name for s in sig.input_specs if s.kind.name == "USER_INPUT"]
    n_out = len([s for s in sig.output_specs if s.kind.name == "USER_OUTPUT"])
    output_names = [f"output{i}" for i in range(n_out)]
    return ImportedModel(mod, input_names, output_names, "torch")


# -- ONNX -------------------------------------------------------------------------------------


def _is_onnx_proto(model: object) -> bool:
    onnx = sys.modules.get("onnx")
    return onnx is not None and isinstance(model, onnx.ModelProto)


def load_onnx(model: str | os.PathLike | bytes | Any, limits: Any = None) -> Any:
    """Read an ONNX model from a path, bytes or ModelProto and validate it before import
    (``onnx_validate``: structure, tensors, external data, the full ONNX checker, and the
    resource ``limits``, a :class:`~lepton_compiler.Limits`)."""
    import onnx

    from lepton_compiler.frontend.onnx_validate import DEFAULT_LIMITS, check_file_size, validate

    limits = limits or DEFAULT_LIMITS
    where, base_dir = "ONNX model", None
    try:
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            where, base_dir = str(path), path.parent
            if not path.is_file():
                raise ModelLoadError(f"{path}: no such ONNX file")
            check_file_size(path, limits)
            proto = onnx.load(str(path), load_external_data=False)
        elif isinstance(model, (bytes, bytearray)):
            where = f"ONNX bytes ({len(model)} bytes)"
            if len(model) > limits.max_model_bytes:
                raise ModelLoadError(f"{where}: over the model size limit of "
                                     f"{limits.max_model_bytes} bytes")
            proto = onnx.load_from_string(bytes(model))
        elif _is_onnx_proto(model):
            proto = model
        else:
            raise ModelLoadError(f"not an ONNX model: {type(model).__name__}")
    except LeptonError:
        raise
    except Exception as err:  # protobuf DecodeError and friends
        raise ModelLoadError(
            f"{where}: not a readable ONNX model ({type(err).__name__}: {err}); the file is "
            "truncated or not ONNX"
        ) from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"{where}: the ONNX graph is empty; the file is not a valid model")
    validate(proto, where, base_dir, limits)  # also loads checked external data
    return proto


def from_onnx(model: Any, example_inputs: Sequence[Any] | None = None,
              limits: Any = None) -> ImportedModel:
    """Import an ONNX model (path, bytes or ModelProto) into Relax, validated first."""
    from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    proto = load_onnx(model, limits)
    if onnx_qoperator.has_qoperators(proto):  # QOperator format: as its QDQ twin
        try:
            proto = onnx_qoperator.expand_qoperators(proto)
        except ValueError as err:
            raise ModelLoadError(f"{err}; this quantized operator cannot be imported") from None
    original_nodes = list(proto.graph.node)
    proto = onnx_rewrites.expand_layer_norm_stats(proto)
    supported = set(_get_convert_map()) | {"If", "Constant"}
    proto = onnx_prepare.expand_functions(proto, supported)
    initializers = {t.name for t in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    shape_dict = _onnx_input_shapes(graph_inputs, example_inputs)
    proto, pinned, unpinned = onnx_prepare.pin_inputs(proto, example_inputs)
    if unpinned:
        name, node = next(iter(unpinned.items()))
        raise OptionError(
            f"ONNX input {name!r} decides a shape in {node}; pass example_inputs holding "
            "the value the compiled model will be called with, in the input's declared "
            "dtype and at most "
            f"{onnx_prepare.MAX_PINNED_ELEMENTS} elements (it is fixed at build time)")
    proto = onnx_prepare.fold_constants(onnx_prepare.with_input_shapes(proto, shape_dict))
    proto = onnx_prepare.fold_constants(onnx_exact.rewrite(proto))
    missing: dict[str, list[str]] = defaultdict(list)
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in supported:
            missing[node.op_type].append(node.name or f"#{i}")
    reasons = {}
    for op, (nodes, reason) in onnx_exact.inexact_nodes(proto).items():
        missing[op].extend(nodes)
        reasons[op] = reason
    if missing:
        raise UnsupportedOperatorError("ONNX", missing, reasons)
    tvm_shapes = {k: v for k, v in shape_dict.items() if k not in pinned}
    converting: list[Any] = []
    try:
        with _clip_as_relax_op(), _softplus_log1p(), _track_nodes(converting), \
                redirect_stdout(io.StringIO()):  # the importer prints its inputs
            mod = tvm_from_onnx(proto, shape_dict=tvm_shapes, keep_params_in_input=False)
    except Exception as err:
        from lepton_compiler.frontend.onnx_validate import node_label

        where = ""
        if converting:
            node = converting[-1]
            where = f"{node_label(node, list(proto.graph.node).index(node))}: " \
                if node in proto.graph.node else f"node {node.name!r} ({node.op_type}): "
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelLoadError(
            f"{where}importing the ONNX model into Relax failed: {type(err).__name__}: "
            f"{text[:300]}{'...' if len(text) > 300 else ''}; check this node's inputs and "
            "attributes"
        ) from None
    if pinned:
        mod = _with_pinned_params(mod, graph_inputs, pinned)
    node_names: dict[str, list[str]] = defaultdict(list)
    for i, node in enumerate(original_nodes):
        node_names[node.op_type].append(node.name or f"#{i}")
    return ImportedModel(
        mod,
        [i.name for i in graph_inputs],
        [o.name for o in proto.graph.output],
        "onnx",
        dict(node_names),
        pinned,
    )


def _with_pinned_params(mod: Any, graph_inputs: list, pinned: dict[str, np.ndarray]) -> Any:
    """``main`` taking every graph input again, pinned ones as unused parameters, so the
    compiled model's signature is the ONNX model's (the runtime checks the pinned values)."""
    from tvm import relax

    main = mod["main"]
    params = iter(main.params)
    full = []
    for value in graph_inputs:
        if value.name in pinned:
            array = pinned[value.name]
            full.append(relax.Var(value.name, relax.TensorType(list(array.shape),
                                                               str(array.dtype))))
        else:
            full.append(next(params))
    func = relax.Function(full, main.body, main.ret_ty, main.is_pure, main.attrs, main.span)
    mod["main"] = func.with_attr("num_input", len(full))
    return mod


@contextmanager
def _track_nodes(converting: list) -> Any:
    """Record each node TVM's ONNX importer starts converting (the last one is the node a
    conversion error belongs to)."""
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    original = ONNXGraphImporter.__dict__["_parse_value_proto"]

    def parse(self: Any, value_proto: Any) -> Any:
        if hasattr(value_proto, "op_type"):
            converting.append(value_proto)
        return original(self, value_proto)

    ONNXGraphImporter._parse_value_proto = parse
    try:
        yield
    finally:
        ONNXGraphImporter._parse_value_proto = original


@contextmanager
def _converter_override(converter: Any, version: str, impl: Any) -> Any:
    """While active, TVM's ONNX converter ``converter.<version>`` (a classmethod) is
    ``impl(original, cls, bb, inputs, attr, params)``, ``original`` being its own function."""
    original = converter.__dict__[version]
    setattr(converter, version, classmethod(
        lambda cls, *args: impl(original.__func__, cls, *args)))
    try:
        yield
    finally:
        setattr(converter, version, original)


def _clip_as_relax_op() -> Any:
    """Import ONNX ``Clip`` with constant finite bounds as ``relax.op.clip``.

    TVM's importer emits ``Clip`` as two TE kernels (maximum, minimum) called with
    ``call_tir``, which later passes cannot see as one activation: ONNX ReLU6 then stays a
    float layer between int8 convs instead of fusing into them, as PyTorch's ReLU6 (imported
    as ``relax.op.clip``) does. Other bounds (tensors, NaN, absent) keep TVM's conversion.
    """
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import Clip

    from lepton_compiler import tvm_compat

    def bound(value: Any) -> float | None:
        if value is None or not tvm_compat.is_tensor_constant(value):
            return None
        data = tvm_compat.constant_numpy(value)
        if data.size != 1 or not np.isfinite(data).all():
            return None
        return float(data.reshape(()))

    def impl(original: Any, cls: Any, bb: Any, inputs: Any, attr: Any, params: Any) -> Any:
        lo, hi = bound(inputs[1]), bound(inputs[2])
        if lo is not None and hi is not None and lo <= hi \
                and str(inputs[0].ty.dtype).startswith("float"):
            return relax.op.clip(inputs[0], relax.prim_value(lo), relax.prim_value(hi))
        return original(cls, bb, inputs, attr, params)

    return _converter_override(Clip, "_impl_v13", impl)


def _softplus_log1p() -> Any:
    """Import float32 ``Softplus`` as ``max(x, 0) + log1p(exp(-|x|))`` in one kernel.

    TVM's importer computes ``log(1 + exp(-|x|))``: for ``x << 0`` the sum rounds to 1 + a
    few bits and the result loses all its digits (Mish(-10) was 0.13% off). ``log1p`` keeps
    them; the element is computed once (one Let-bound value), whatever fuses around it.
    """
    from tvm import te, tirx
    from tvm.relax.frontend.onnx.onnx_frontend import Softplus

    from lepton_compiler.lower.fast_math import exp_expr

    def softplus(x: Any) -> Any:
        def element(*i: Any) -> Any:
            v, w, u = (tirx.Var(n, "float32") for n in ("v", "w", "u"))
            body = tirx.max(v, tirx.const(0.0, "float32")) + tirx.log1p(u)
            return tirx.Let(v, x(*i), tirx.Let(w, -tirx.abs(v), tirx.Let(
                u, exp_expr(w), body)))
        return te.compute(x.shape, element, name="softplus")

    def impl(original: Any, cls: Any, bb: Any, inputs: Any, attr: Any, params: Any) -> Any:
        if str(inputs[0].ty.dtype) != "float32":
            return original(cls, bb, inputs, attr, params)
        return bb.emit_te(softplus, inputs[0], primfunc_name_hint="softplus")

    return _converter_override(Softplus, "_impl_v1", impl)


def _onnx_input_shapes(graph_inputs: list, example_inputs: Sequence[Any] | None) -> dict:
    """Static shapes for every graph input: from the model, else from example inputs."""
    examples = list(example_inputs) if example_inputs is not None else None
    if examples is not None and len(examples) != len(graph_inputs):
        raise OptionError(
            f"the ONNX model has {len(graph_inputs)} input(s), got {len(examples)} example input(s)"
        )
    shapes = {}
    for i, value in enumerate(graph_inputs):
        dims = value.type.tensor_type.shape.dim
        if examples is not None:
            shapes[value.name] = list(np.shape(examples[i]))
        elif all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
        else:
            raise OptionError(
                f"ONNX input {value.name!r} has a dynamic shape; pass example_inputs (or "
                "--input-shape on the command line) to fix it"
            )
    return shapes
