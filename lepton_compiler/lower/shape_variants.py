"""One artifact, several input shapes: ``build(model, example_inputs, shapes=[...])``.

Every shape set is compiled as its own plan (the same stages as a single-shape build, so
each plan's kernels and results are those of a build at that shape); the artifact holds the
first plan at the top of ``plan.json`` and the others under ``variants``, one kernel library
for all (the kernels of plan ``k >= 1`` are renamed ``s<k>_<name>``), and one weights blob
in which every distinct constant is stored once (the plans' weight tensors point into it).
The runtime picks the plan whose input shapes the call's inputs have and refuses other
shapes with an ``InputError`` that lists the compiled ones.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from lepton_compiler.errors import OptionError
from lepton_runtime.format import ALIGNMENT


def input_names(model: Any, count: int) -> list[str]:
    """The model's input names in calling order (ONNX graph inputs, or the parameters of a
    torch module's ``forward``); positional names when they cannot be read."""
    import os

    if isinstance(model, (bytes, bytearray, str, os.PathLike)):
        import onnx

        try:
            model = onnx.load_from_string(bytes(model)) if isinstance(
                model, (bytes, bytearray)) else onnx.load(str(model), load_external_data=False)
        except Exception:  # the build itself reports an unreadable model
            return [f"input{i}" for i in range(count)]
    onnx = __import__("sys").modules.get("onnx")
    if onnx is not None and isinstance(model, onnx.ModelProto):
        initializers = {t.name for t in model.graph.initializer}
        return [i.name for i in model.graph.input if i.name not in initializers]
    forward = getattr(model, "forward", None)
    if forward is not None:
        params = [p.name for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(params) >= count:
            return params[:count]
    return [f"input{i}" for i in range(count)]


def examples(model: Any, example_inputs: Any, shapes: Any) -> list[tuple]:
    """One example-input tuple per shape set of ``shapes``.

    ``shapes``: a list of shape sets, each a sequence of shapes (one per input, in calling
    order) or a mapping input name -> shape (inputs left out keep the example's shape). Each
    example is the given one resized (``numpy.resize``: its values repeated), so integer
    inputs such as token ids stay in their range.
    """
    if example_inputs is None:
        raise OptionError("shapes= needs example_inputs (their dtypes and values are "
                          "resized to each shape)")
    base = list(example_inputs) if isinstance(example_inputs, (list, tuple)) \
        else [example_inputs]
    arrays = [_numpy(a) for a in base]
    if isinstance(shapes, (str, bytes)) or not isinstance(shapes, Sequence) or not shapes:
        raise OptionError("shapes= must be a non-empty list of shape sets, e.g. "
                          "[[(1, 32)], [(4, 32)]] or [{'input_ids': (1, 32)}, ...]")
    names = input_names(model, len(arrays))
    out, seen = [], set()
    for k, entry in enumerate(shapes):
        dims = _shape_set(entry, names, arrays, k)
        if dims in seen:
            raise OptionError(f"shapes[{k}] repeats the shape set {[list(d) for d in dims]}")
        seen.add(dims)
        out.append(tuple(a if a.shape == d else np.resize(a, d)
                         for a, d in zip(arrays, dims, strict=True)))
    return out


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _shape_set(entry: Any, names: list[str], arrays: list[np.ndarray],
               k: int) -> tuple[tuple[int, ...], ...]:
    if isinstance(entry, dict):
        unknown = [n for n in entry if n not in names]
        if unknown:
            raise OptionError(f"shapes[{k}] names unknown input(s) {unknown}; the inputs are "
                              f"{names}")
        entry = [entry.get(n, a.shape) for n, a in zip(names, arrays, strict=True)]
    if not isinstance(entry, Sequence) or len(entry) != len(arrays):
        raise OptionError(f"shapes[{k}] must give one shape per input ({len(arrays)}), got "
                          f"{entry!r}")
    dims = []
    for name, array, shape in zip(names, arrays, entry, strict=True):
        shape = tuple(shape) if isinstance(shape, Sequence) else (shape,)
        if len(shape) != array.ndim or not all(isinstance(d, (int, np.integer)) and d > 0
                                               for d in shape):
            raise OptionError(f"shapes[{k}]: input {name!r} needs {array.ndim} positive "
                              f"dimensions, got {list(shape)}")
        dims.append(tuple(int(d) for d in shape))
    return tuple(dims)


def combine(parts: list[Any]) -> tuple[dict, bytes, list[Any]]:
    """The artifact's plan (``variants`` for parts 1..), one weights blob with every
    distinct constant stored once, and the parts with their kernels renamed apart."""
    blob = bytearray()
    stored: dict[tuple[str, int], int] = {}  # (sha256, size) -> offset in the shared blob
    plans, renamed = [], []
    for k, part in enumerate(parts):
        plan = copy.deepcopy(part.plan)
        for tensor in plan["tensors"]:
            if tensor["kind"] != "weight":
                continue
            size = int(np.prod(tensor["shape"], dtype=np.int64)) * \
                np.dtype(tensor["dtype"]).itemsize
            data = part.weights[tensor["offset"]: tensor["offset"] + size]
            key = (hashlib.sha256(data).hexdigest(), size)
            if key not in stored:
                stored[key] = (len(blob) + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
                blob.extend(b"\0" * (stored[key] - len(blob)))
                blob.extend(data)
            tensor["offset"] = stored[key]
        prefix = f"s{k}_" if k else ""
        for call in plan["calls"]:
            call["kernel"] = prefix + call["kernel"]
        plans.append(plan)
        renamed.append(dataclasses.replace(
            part, plan=plan,
            scheduled={prefix + n: f for n, f in part.scheduled.items()},
            fallback={prefix + n: f for n, f in part.fallback.items()},
            npu_kernels={prefix + n for n in part.npu_kernels},
            kernel_names=[prefix + n for n in part.kernel_names]))
    top = plans[0]
    if len(plans) > 1:
        top["variants"] = plans[1:]
    return top, bytes(blob), renamed
