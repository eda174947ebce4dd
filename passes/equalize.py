"""CrossLayerEqualization: balance the per-channel weight ranges of consecutive convolutions
before calibration (Nagel et al., "Data-Free Quantization", 2019; AIMET and NNCF have it).

For a conv ``L1`` (no activation, or ReLU) whose output only the conv ``L2`` reads, scaling
``L1``'s output channel ``c`` by ``1/s_c`` (its weights and bias) and ``L2``'s input channel
``c`` by ``s_c`` leaves the model's function unchanged, because ``relu(x / s) = relu(x) / s``
for ``s > 0``. With ``s_c = sqrt(r1_c / r2_c)`` (``r1_c``, ``r2_c`` the channel's largest
weight magnitude in each layer) both layers end with equal ranges per channel, which helps
per-tensor weights and, above all, a depthwise layer whose channels differ by orders of
magnitude. ReLU6 is not positively homogeneous (``min(x, 6) / s != min(x / s, 6)``), so
pairs through ReLU6 are left alone.

Before::

    y = relu(conv2d(x, W1) + b1);  z = conv2d(y, W2)

After::

    y = relu(conv2d(x, W1 / s) + b1 / s);  z = conv2d(y, W2 * s)   (s per channel of y)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler import tvm_compat

#: Equalization rounds over a chain of pairs (each balances one pair, unbalancing its
#: neighbour a little less each time).
ROUNDS = 20


def _pairs(graph: Any) -> list[tuple[Any, Any]]:
    """(L1, L2) conv2d pairs where L2 is the only reader of L1's output."""
    readers: dict[str, list[Any]] = {}
    for layer in graph.layers:
        for t in layer.inputs:
            readers.setdefault(t, []).append(layer)
    pairs = []
    for first in graph.layers:
        users = readers.get(first.output, [])
        if first.kind != "conv2d" or first.act not in (None, "relu") or len(users) != 1 or \
                first.output in graph.outputs:
            continue
        second = users[0]
        if second.kind != "conv2d" or second.inputs != [first.output]:
            continue
        g1, g2 = first.attrs["groups"], second.attrs["groups"]
        channels = first.weight.shape[-1]
        if g1 not in (1, channels) or g2 not in (1, channels):
            continue  # grouped (not depthwise) layers mix channels in blocks
        pairs.append((first, second))
    return pairs


def CrossLayerEqualization() -> Any:
    """The module pass ``lepton.CrossLayerEqualization`` (see the module docstring). The
    returned ``main`` lists the pairs it balanced in its ``lepton.equalized`` attribute
    ("L1>L2", comma-separated); a module without such pairs is returned as it is."""
    import tvm
    from tvm import relax

    from lepton_compiler.passes.qgraph import read_graph

    @relax.expr_functor.mutator
    class Replace(relax.PyExprMutator):
        def __init__(self, mod: Any, table: dict[Any, np.ndarray]) -> None:
            super().__init__(mod)
            self.table = table

        def visit_call_(self, op: Any) -> Any:
            call = self.visit_expr_post_order(op)
            args = [relax.const(self.table[a].astype(tvm_compat.constant_numpy(a).dtype))
                    if a in self.table else a for a in op.args]
            if all(a is b for a, b in zip(args, op.args, strict=True)):
                return call
            return relax.Call(call.op, [args[i] if op.args[i] in self.table else call.args[i]
                                        for i in range(len(args))], call.attrs, call.ty_args)

    @tvm.transform.module_pass(opt_level=0, name="lepton.CrossLayerEqualization")
    def transform(mod: Any, _ctx: Any) -> Any:
        graph = read_graph(mod["main"])
        current: dict[Any, np.ndarray] = {}  # constant -> its equalized value

        def value(const: Any) -> np.ndarray:
            if const not in current:
                current[const] = tvm_compat.constant_numpy(const).astype(np.float64)
            return current[const]

        pairs = []
        for first, second in _pairs(graph):
            w1, w2 = first.expr.args[1], second.expr.args[1]
            if not (tvm_compat.is_tensor_constant(w1) and tvm_compat.is_tensor_constant(w2)):
                continue
            biases = [arg for _, v in first.bindings[1:]
                      if getattr(v.op, "name", "") == "relax.add" for arg in v.args
                      if tvm_compat.is_tensor_constant(arg)]
            pairs.append((first, second, w1, w2, biases))
        owners: dict[Any, set[str]] = {}
        for first, second, w1, w2, biases in pairs:
            for const, layer in ((w1, first), (w2, second), *((b, first) for b in biases)):
                owners.setdefault(const, set()).add(layer.name)
        if any(len(names) > 1 for names in owners.values()):
            return mod  # a constant shared between layers: leave the model alone
        # Balancing one pair unbalances its neighbour in a chain: iterate (DFQ does too).
        for _ in range(ROUNDS):
            largest = 0.0
            for _first, second, w1, w2, biases in pairs:
                a, b = value(w1), value(w2)
                r1 = np.abs(a).reshape(-1, a.shape[-1]).max(axis=0)
                r2 = np.abs(b).max(axis=(0, 1, 3)) if second.attrs["groups"] == 1 else \
                    np.abs(b).reshape(-1, b.shape[-1]).max(axis=0)
                ok = (r1 > 0) & (r2 > 0)
                scale = np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)),
                                 1.0)
                largest = max(largest, float(np.abs(np.log(scale)).max()))
                current[w1] = a / scale
                current[w2] = b * (scale[None, None, :, None] if second.attrs["groups"] == 1
                                   else scale)
                for bias in biases:
                    v = value(bias)
                    current[bias] = v / scale.reshape((1,) * (v.ndim - 1) + (-1,))
            if largest < 1e-3:
                break
        if not pairs:
            return mod
        replace = Replace(mod, current)
        main = replace.visit_expr(mod["main"])
        mod = replace.builder_.get()
        names = ",".join(f"{first.name}>{second.name}" for first, second, *_ in pairs)
        mod["main"] = main.with_attr("lepton.equalized", names)
        return relax.transform.Normalize()(mod)

    return transform
