"""Run-time value safety: no index or divisor from the user can crash the process, read
outside a tensor or pass silently (issue 16). Every checked operator of the inventory gets
an out-of-range (or zero) value at run time and must answer with an ``InputError`` naming
the input, the node, the position and the valid range — in-process and in the thin runtime
— after which the next valid call is still correct (onnxruntime is the oracle)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import lepton_compiler as lc
import lepton_runtime
from lepton_compiler.errors import CompileError
from lepton_compiler.passes.value_guards import INVENTORY, GuardValues
from lepton_runtime import ArtifactError, InputError
from lepton_runtime import format as fmt
from tests.fuzz.value_models import feeds, value_ops_model
from tests.test_runtime import _members, _with_plan, _write


@pytest.fixture(scope="module")
def value_model(tmp_path_factory):
    model, values, others = value_ops_model()
    compiled = lc.build(model)
    path = compiled.export(tmp_path_factory.mktemp("values") / "values.lepton")
    oracle = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return compiled, path, oracle, values, others


def _check_equal(got, want):
    for g, w in zip(got, want, strict=True):
        if np.issubdtype(np.asarray(w).dtype, np.integer):
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_valid_values_agree_with_onnxruntime(value_model):
    compiled, _, oracle, values, others = value_model
    rng = np.random.default_rng(1)
    for _ in range(3):
        inputs = feeds(values, others, rng)
        _check_equal(compiled(inputs), oracle.run(None, inputs))


@pytest.mark.parametrize("which", range(9))
def test_a_bad_value_is_an_input_error_naming_input_node_position_and_range(value_model,
                                                                            which):
    compiled, _, oracle, values, others = value_model
    v = values[which]
    rng = np.random.default_rng(which)
    for _ in range(4):
        inputs = feeds(values, others, rng)
        bad, position, value = v.invalid(rng)
        inputs[v.name] = bad
        with pytest.raises(InputError) as err:
            compiled(inputs)
        message = str(err.value)
        assert f"input {v.name!r}" in message and f"'{v.node}'" in message, message
        assert f"position {list(position)}" in message, message
        if v.kind == "index":
            assert f"index {value} " in message and f"{v.low}..{v.high}" in message, message
        else:
            assert "divisor 0" in message, message
        with pytest.raises(Exception):  # noqa: B017 - the oracle refuses it as well
            oracle.run(None, inputs)
        inputs = feeds(values, others, rng)  # the process survives; the next call is right
        _check_equal(compiled(inputs), oracle.run(None, inputs))


def test_integer_min_over_minus_one_wraps_like_onnxruntime(value_model):
    compiled, _, oracle, values, others = value_model
    inputs = feeds(values, others, np.random.default_rng(5))
    inputs["num"][:2] = np.iinfo(np.int32).min
    inputs["den"][:2] = -1
    inputs["mden"][:2] = -1
    inputs["fnum"][:2] = np.iinfo(np.int64).min
    inputs["fden"][:2] = -1
    _check_equal(compiled(inputs), oracle.run(None, inputs))


_CHILD = """
import json, sys
import numpy as np
import lepton_runtime
session = lepton_runtime.load(sys.argv[1])
feeds = {k: np.asarray(v, dtype=d) for k, (v, d) in json.loads(sys.stdin.read()).items()}
bad = dict(feeds)
bad["ids"] = bad["ids"].copy(); bad["ids"][1, 3] = 10**8
bad2 = dict(feeds)
bad2["den"] = bad2["den"].copy(); bad2["den"][2] = 0
for case in (bad, bad2):
    try:
        session.run(case)
        print("no error")
    except lepton_runtime.InputError as err:
        print("InputError:", err)
out = session.run(feeds)
print("ok", float(np.asarray(out[0]).sum()))
"""


def test_thin_runtime_in_a_child_process_raises_and_survives(value_model):
    compiled, path, _, values, others = value_model
    inputs = feeds(values, others, np.random.default_rng(7))
    payload = json.dumps({k: (v.tolist(), str(v.dtype)) for k, v in inputs.items()})
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], input=payload,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("InputError: input 'ids': index 100000000 at position [1, 3]")
    assert "'lookup'" in lines[0] and "-1000..999" in lines[0]
    assert lines[1].startswith("InputError: input 'den': divisor 0 at position [2]")
    expected = float(compiled(inputs)[0].sum())
    assert lines[2] == f"ok {expected}"


class _TorchIndexing(nn.Module):
    """embedding, index_select and torch.gather: the torch spellings of the same ops."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 4)
        self.register_buffer("table", torch.randn(10, 3))

    def forward(self, ids, rows, gidx):
        return (self.emb(ids), torch.index_select(self.table, 0, rows),
                torch.gather(self.table, 1, gidx))


def test_torch_embedding_index_select_and_gather_are_checked():
    torch.manual_seed(0)
    model = _TorchIndexing().eval()
    ids = torch.randint(0, 50, (2, 5))
    rows = torch.randint(0, 10, (4,))
    gidx = torch.randint(0, 3, (10, 2))
    compiled = lc.build(model, (ids, rows, gidx))
    with torch.no_grad():
        want = model(ids, rows, gidx)
    for g, w in zip(compiled(ids, rows, gidx), want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-6)
    for name, args, valid in [
            ("ids", (torch.full((2, 5), 50), rows, gidx), "0..49"),
            ("rows", (ids, torch.full((4,), -1), gidx), "0..9"),  # PyTorch: no negatives
            ("gidx", (ids, rows, torch.full((10, 2), 3)), "0..2")]:
        with pytest.raises(InputError, match=f"input '{name}': index .*valid indices are "
                                             f"{valid}"):
            compiled(*args)
        with pytest.raises((IndexError, RuntimeError)):  # PyTorch refuses it as well
            model(*args)
    for g, w in zip(compiled(ids, rows, gidx), want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-6)


def test_a_constant_zero_divisor_is_refused_at_build():
    from onnx import TensorProto, helper, numpy_helper

    zero = numpy_helper.from_array(np.array([1, 0, 2], np.int32), "d")
    graph = helper.make_graph(
        [helper.make_node("Div", ["x", "d"], ["y"], name="div")], "g",
        [helper.make_tensor_value_info("x", TensorProto.INT32, [3])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [3])], [zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=10)
    with pytest.raises(lc.LeptonError, match=r"'div'.*divisor value 0"):
        lc.build(model)  # the ONNX importer refuses it, naming the node

    class FloorDiv(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("d", torch.tensor([1, 0, 2], dtype=torch.int32))

        def forward(self, x):
            return torch.div(x, self.d, rounding_mode="floor")

    with pytest.raises(CompileError, match="divides integers by a constant that holds 0"):
        lc.build(FloorDiv(), (torch.tensor([4, 5, 6], dtype=torch.int32),))


def test_models_without_trusted_values_get_no_guard():
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU()).eval()
    compiled = lc.build(model, torch.randn(2, 8))
    plan = json.loads(_members_of(compiled)[fmt.PLAN])
    assert plan["calls"] and not [c for c in plan["calls"] if "guard" in c]


def _members_of(compiled):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="lepton-guard-test-") as folder:
        return _members(compiled.export(Path(folder) / "m.lepton"))


def test_the_inventory_lists_every_checked_op_with_its_rule():
    checked = {op for op, (how, _) in INVENTORY.items() if how == "checked"}
    assert {"relax.take", "relax.gather_elements", "relax.gather_nd", "relax.scatter_elements",
            "relax.scatter_nd", "relax.divide", "relax.floor_divide", "relax.mod",
            "relax.floor_mod"} <= checked
    assert all(how in ("checked", "bounded", "static") for how, _ in INVENTORY.values())
    assert GuardValues().info.name == "lepton.GuardValues"


@pytest.mark.parametrize("edit, match", [
    (lambda g, plan: g["guard"].update(status=g["args"][0]), "status must be an int64"),
    (lambda g, plan: g["guard"].update(check="anything"), "check in"),
    (lambda g, plan: g["guard"].update(shape=[10**6]), "shape does not match"),
    (lambda g, plan: g["guard"].update(extents=[]), "names no extent"),
])
def test_a_tampered_guard_entry_is_refused_at_load(value_model, tmp_path, edit, match):
    _, path, _, _, _ = value_model
    members = _members(path)
    plan = json.loads(members[fmt.PLAN])
    guarded = [c for c in plan["calls"] if "guard" in c and c["guard"]["check"] == "index"]
    edit(guarded[0], plan)
    with pytest.raises(ArtifactError, match=match):
        lepton_runtime.load(_write(tmp_path / "tampered.lepton", _with_plan(members, plan)))


def _onnx(nodes, inputs, outputs, inits=()):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=10).SerializeToString()


def test_bounded_ops_answer_out_of_range_values_like_onnxruntime():
    """OneHot compares instead of addressing; GridSample tests bounds before it reads."""
    from onnx import TensorProto, helper, numpy_helper

    info = helper.make_tensor_value_info
    one_hot = _onnx([helper.make_node("OneHot", ["i", "depth", "vals"], ["y"], axis=-1)],
                    [info("i", TensorProto.INT64, [6])], [info("y", TensorProto.FLOAT, [6, 5])],
                    [numpy_helper.from_array(np.array(5, np.int64), "depth"),
                     numpy_helper.from_array(np.array([0, 1], np.float32), "vals")])
    ids = np.array([0, 4, 5, -1, -6, 10**12], np.int64)
    want = ort.InferenceSession(one_hot, providers=["CPUExecutionProvider"]).run(
        None, {"i": ids})[0]
    np.testing.assert_array_equal(lc.build(one_hot)(ids), want)

    grid_sample = _onnx([helper.make_node("GridSample", ["x", "grid"], ["y"])],
                        [info("x", TensorProto.FLOAT, [1, 2, 4, 4]),
                         info("grid", TensorProto.FLOAT, [1, 3, 3, 2])],
                        [info("y", TensorProto.FLOAT, [1, 2, 3, 3])])
    compiled = lc.build(grid_sample)
    oracle = ort.InferenceSession(grid_sample, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 2, 4, 4), dtype=np.float32)
    far = np.array([5, -7, 100, 0.5, -0.3, 40] * 3, np.float32).reshape(1, 3, 3, 2)
    np.testing.assert_allclose(compiled(x, far), oracle.run(None, {"x": x, "grid": far})[0],
                               rtol=1e-5, atol=1e-6)
    wild = np.array([np.nan, 1e30, -np.inf, 0.5, np.inf, -1e30] * 3,
                    np.float32).reshape(1, 3, 3, 2)
    assert compiled(x, wild).shape == (1, 2, 3, 3)  # no read outside x, no signal
    np.testing.assert_allclose(compiled(x, far), oracle.run(None, {"x": x, "grid": far})[0],
                               rtol=1e-5, atol=1e-6)


def test_values_that_would_reach_shapes_are_fixed_at_build_or_refused():
    """An input that decides a shape (TopK's k, Range's bounds) is fixed to its example's
    value (the artifact refuses any other) or, without an example, refused at build; a
    shape that depends on data (NonZero) is refused at build."""
    from onnx import TensorProto, helper

    from lepton_compiler.errors import OptionError

    info = helper.make_tensor_value_info
    top_k = _onnx([helper.make_node("TopK", ["x", "k"], ["v", "i"])],
                  [info("x", TensorProto.FLOAT, [8]), info("k", TensorProto.INT64, [1])],
                  [info("v", TensorProto.FLOAT, [None]), info("i", TensorProto.INT64, [None])])
    with pytest.raises(OptionError, match=r"'k' decides a shape in node #0 \(TopK\)"):
        lc.build(top_k)
    arange = _onnx([helper.make_node("Range", ["a", "b", "c"], ["y"])],
                   [info(n, TensorProto.INT64, []) for n in "abc"],
                   [info("y", TensorProto.INT64, [None])])
    bounds = [np.array(v, np.int64) for v in (2, 11, 3)]
    compiled = lc.build(arange, bounds)
    np.testing.assert_array_equal(compiled(*bounds), np.arange(2, 11, 3))
    with pytest.raises(InputError, match="input 'b' decides a shape"):
        compiled(bounds[0], np.array(12, np.int64), bounds[2])
    nonzero = _onnx([helper.make_node("NonZero", ["x"], ["y"])],
                    [info("x", TensorProto.FLOAT, [6])], [info("y", TensorProto.INT64, [1, None])])
    with pytest.raises(lc.UnsupportedOperatorError, match=r"NonZero: used by #0 .*depends on "
                       "input values"):
        lc.build(nonzero)


def test_tuning_sees_the_built_kernels_but_never_the_guards():
    """Tuning extracts the same kernels build compiles (guards and NaN-keeping clamps
    included), and leaves the guards alone: they are never scheduled."""
    from lepton_compiler.passes.value_guards import is_guard
    from lepton_compiler.pipeline import fused_module
    from lepton_compiler.target.host import resolve_host
    from lepton_compiler.tuning.tuner import extract_tasks

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 8), nn.ReLU()).eval()
    ids = torch.randint(0, 50, (2, 5))
    fused = fused_module(model, (ids,), None, None, resolve_host())
    assert any(is_guard(f) for f in fused.functions.values() if hasattr(f, "attrs"))
    _, _, host_kernels, _ = extract_tasks(model, (ids,), None, target="host")
    assert host_kernels and not any(is_guard(f) for f in host_kernels.values())


def test_inspect_lists_every_value_check(value_model):
    _, path, _, values, _ = value_model
    guards = lepton_runtime.inspect(path)["guards"]
    assert len(guards) == len(values)
    for v in values:
        line = next(g for g in guards if g.startswith(f"input {v.name!r}:"))
        assert f"'{v.node}'" in line
        assert (f"{v.low}..{v.high}" in line) if v.kind == "index" else "non-zero" in line
    shown = subprocess.run([sys.executable, "-m", "lepton_compiler.cli", "inspect", str(path)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"value checks: {len(values)}" in shown.stdout
    assert "input 'ids': index of Gather 'lookup' (take) in -1000..999" in shown.stdout
