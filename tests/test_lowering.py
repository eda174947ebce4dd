"""Lowering stages: invariants checked between stages, layout conversion is optional."""

from __future__ import annotations

import pytest
import tvm
from tvm import relax

from lepton_compiler.errors import CompileError
from lepton_compiler.lower.lowering import check_well_formed, convert_layout


def _module_with_undefined_var():
    x = relax.Var("x", relax.TensorType((2,), "float32"))
    undefined = relax.Var("undefined", relax.TensorType((2,), "float32"))
    return tvm.IRModule({"main": relax.Function([x], undefined)})


def test_malformed_ir_is_reported_with_the_stage():
    with pytest.raises(CompileError, match="not well formed after stage 'fuse'"):
        check_well_formed(_module_with_undefined_var(), "fuse")


def test_convert_layout_leaves_graphs_without_conv_alone():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.relu(x))
        bb.emit_func_output(y)
    mod = bb.get()
    assert convert_layout(mod) is mod
