"""A small evaluator of imported (NCHW) Relax graphs on PyTorch's functional ops.

Fast enough to run hypothesis over many random graphs where compiling each one with TVM would
take seconds; the tests that need TVM's own numerics compile with ``tvm.compile``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tvm import relax

from lepton_compiler import tvm_compat

BINARY = {"relax.add": torch.add, "relax.subtract": torch.sub, "relax.multiply": torch.mul,
          "relax.divide": torch.div}


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values]


def _scalar(prim: Any) -> float:
    value = prim.value
    return float(getattr(value, "value", value))


def _call(op: str, args: list, attrs: Any, ret: Any) -> Any:
    if op in BINARY:
        return BINARY[op](args[0], args[1])
    if op == "relax.nn.conv2d":
        pad = _ints(attrs.padding)
        x = F.pad(args[0], (pad[1], pad[3], pad[0], pad[2]))
        return F.conv2d(x, args[1], stride=_ints(attrs.strides),
                        dilation=_ints(attrs.dilation), groups=int(attrs.groups))
    if op == "relax.nn.batch_norm":
        x, gamma, beta, mean, var = args
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + float(attrs.epsilon))
        return y * gamma.reshape(shape) + beta.reshape(shape), mean, var
    if op == "relax.nn.relu":
        return torch.relu(args[0])
    if op == "relax.clip":
        return torch.clamp(args[0], _scalar(args[1]), _scalar(args[2]))
    if op in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
        pad = _ints(attrs.padding)
        fn = F.max_pool2d if op.endswith("max_pool2d") else F.avg_pool2d
        assert pad == [0, 0, 0, 0]
        return fn(args[0], _ints(attrs.pool_size), _ints(attrs.strides))
    if op == "relax.mean":
        return args[0].mean(dim=_ints(attrs.axis), keepdim=bool(attrs.keepdims))
    if op == "relax.reshape":
        return args[0].reshape(tvm_compat.shape_of(ret))
    if op == "relax.matmul":
        return args[0] @ args[1]
    if op == "relax.concat":
        return torch.cat(list(args[0]), dim=int(attrs.axis))
    if op == "relax.nn.pad":
        width = _ints(attrs.pad_width)  # (before, after) per axis, first axis first
        pairs = [v for i in reversed(range(0, len(width), 2)) for v in width[i:i + 2]]
        return F.pad(args[0], pairs, value=float(attrs.pad_value))
    if op == "relax.permute_dims":
        return args[0].permute(*_ints(attrs.axes))
    raise NotImplementedError(op)


def op_names(mod: Any) -> list[str]:
    """The operator names of every call in ``mod["main"]``, in post order (repeats kept)."""
    names: list[str] = []
    relax.analysis.post_order_visit(
        mod["main"].body,
        lambda e: names.append(e.op.name) if isinstance(e, relax.Call) and hasattr(e.op, "name")
        else None,
    )
    return names


def evaluate(func: Any, *inputs: np.ndarray) -> np.ndarray:
    """Run ``func`` on numpy inputs; returns its first tensor output as numpy."""
    env: dict[Any, Any] = dict(zip(func.params, [torch.from_numpy(x) for x in inputs],
                                   strict=True))

    def value(expr: Any) -> Any:
        if isinstance(expr, relax.Var):
            return env[expr]
        if tvm_compat.is_tensor_constant(expr):
            return torch.from_numpy(tvm_compat.constant_numpy(expr).copy())
        if isinstance(expr, relax.Tuple):
            return tuple(value(f) for f in expr.fields)
        if isinstance(expr, relax.TupleGetItem):
            return value(expr.tuple_value)[expr.index]
        if isinstance(expr, relax.Call):
            return _call(expr.op.name, [value(a) for a in expr.args], expr.attrs, expr.ty)
        return expr  # prim values and shapes: read by the op that takes them

    with torch.no_grad():
        for block in func.body.blocks:
            for b in block.bindings:
                env[b.var] = value(b.value)
        out = value(func.body.body)
    while isinstance(out, tuple):
        out = out[0]
    return out.numpy()
