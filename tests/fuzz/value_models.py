"""ONNX models whose operators trust input *values* (indices, integer divisors), with the
range each such input must respect: the material of the value-safety tests and campaign."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .corpus import IR_VERSION, OPSET


@dataclass(frozen=True)
class ValueInput:
    """One value-trusting input: its name, dtype, shape, the node that trusts it, and the
    valid range ``[low, high]`` (for divisors: any non-zero value in ``[low, high]``)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    node: str
    kind: str            # "index" | "divisor"
    low: int
    high: int

    def valid(self, rng: np.random.Generator) -> np.ndarray:
        values = rng.integers(self.low, self.high + 1, self.shape)
        if self.kind == "divisor":
            values[values == 0] = 1
        return values.astype(self.dtype)

    def invalid(self, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, ...], int]:
        """A valid array with one bad element: (array, its position, the bad value)."""
        values = self.valid(rng)
        position = tuple(int(rng.integers(d)) for d in self.shape)
        if self.kind == "divisor":
            bad = 0
        else:
            span = self.high - self.low + 1
            choices = [self.high + 1, self.low - 1, self.high + span * 5, self.low - 10**6,
                       np.iinfo(self.dtype).max, np.iinfo(self.dtype).min]
            bad = int(choices[int(rng.integers(len(choices)))])
        values[position] = bad
        return values, position, bad


def _value_info(name: str, dtype: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(
        np.dtype(dtype)), list(shape))


def value_ops_model(seed: int = 0) -> tuple[onnx.ModelProto, list[ValueInput], dict]:
    """One model with every value-trusting operator on its own input: Gather (int64 and
    int32 ids, axis 0 and 1), GatherElements, GatherND, ScatterElements, ScatterND, integer
    Div and Mod (fmod 0 and 1). Returns the model, its value inputs and the float inputs."""
    rng = np.random.default_rng(seed)

    def const(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [const("table", (1000, 8)), const("wide", (6, 7)), const("grid", (5, 6)),
             const("cube", (4, 4, 6)), const("base", (5, 6)), const("base2", (4, 5))]
    values = [
        ValueInput("ids", "int64", (4, 16), "lookup", "index", -1000, 999),
        ValueInput("cols", "int32", (3, 5), "lookup_cols", "index", -7, 6),
        ValueInput("gidx", "int64", (5, 3), "gather_el", "index", -6, 5),
        ValueInput("ndidx", "int64", (3, 2), "gather_nd", "index", -4, 3),
        ValueInput("sidx", "int64", (2, 6), "scatter_el", "index", -5, 4),
        ValueInput("snd", "int64", (3, 1), "scatter_nd", "index", -4, 3),
        ValueInput("den", "int32", (8,), "div", "divisor", -9, 9),
        ValueInput("mden", "int32", (8,), "mod", "divisor", -9, 9),
        ValueInput("fden", "int64", (8,), "fmod", "divisor", -9, 9),
    ]
    floats = {"upd": (2, 6), "upd2": (3, 5)}
    ints = {"num": ("int32", (8,)), "fnum": ("int64", (8,))}
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["o_lookup"], name="lookup", axis=0),
        helper.make_node("Gather", ["wide", "cols"], ["o_cols"], name="lookup_cols", axis=1),
        helper.make_node("GatherElements", ["grid", "gidx"], ["o_gel"], name="gather_el",
                         axis=1),
        helper.make_node("GatherND", ["cube", "ndidx"], ["o_gnd"], name="gather_nd"),
        helper.make_node("ScatterElements", ["base", "sidx", "upd"], ["o_sel"],
                         name="scatter_el", axis=0),
        helper.make_node("ScatterND", ["base2", "snd", "upd2"], ["o_snd"], name="scatter_nd"),
        helper.make_node("Div", ["num", "den"], ["o_div"], name="div"),
        helper.make_node("Mod", ["num", "mden"], ["o_mod"], name="mod"),
        helper.make_node("Mod", ["fnum", "fden"], ["o_fmod"], name="fmod", fmod=1),
    ]
    outputs = [("o_lookup", "float32", (4, 16, 8)), ("o_cols", "float32", (6, 3, 5)),
               ("o_gel", "float32", (5, 3)), ("o_gnd", "float32", (3, 6)),
               ("o_sel", "float32", (5, 6)), ("o_snd", "float32", (4, 5)),
               ("o_div", "int32", (8,)), ("o_mod", "int32", (8,)), ("o_fmod", "int64", (8,))]
    graph = helper.make_graph(
        nodes, "value_ops",
        [_value_info(v.name, v.dtype, v.shape) for v in values]
        + [_value_info(n, "float32", s) for n, s in floats.items()]
        + [_value_info(n, d, s) for n, (d, s) in ints.items()],
        [_value_info(n, d, s) for n, d, s in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    others = {n: ("float32", s) for n, s in floats.items()} | ints
    return model, values, others


def feeds(values: list[ValueInput], others: dict, rng: np.random.Generator
          ) -> dict[str, np.ndarray]:
    """Valid inputs for every input of :func:`value_ops_model` (scatter indices distinct per
    column, so the result does not depend on the order of duplicate writes)."""
    out = {v.name: v.valid(rng) for v in values}
    out["sidx"] = np.stack([rng.permutation(5)[:2] for _ in range(6)], axis=1).astype(np.int64)
    out["snd"] = rng.permutation(4)[:3].reshape(3, 1).astype(np.int64)
    for name, (dtype, shape) in others.items():
        if dtype.startswith("float"):
            out[name] = rng.standard_normal(shape).astype(dtype)
        else:
            out[name] = rng.integers(-1000, 1000, shape).astype(dtype)
    return out
