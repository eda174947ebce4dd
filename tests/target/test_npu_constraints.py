"""Offload constraints: each rule's docstring is the user-facing rule, failures say why."""

from __future__ import annotations

from lepton_compiler.target.npu_constraints import CONV2D_RULES, Conv2dOp, conv2d_placement
from lepton_compiler.target.spec import load_spec


def test_dense_int8_conv_runs_on_the_npu():
    assert conv2d_placement(Conv2dOp("conv1", "int8", 64, 64, 1), load_spec()).on_npu


def test_depthwise_conv_falls_back_with_a_stated_reason():
    placement = conv2d_placement(Conv2dOp("dw3", "int8", 32, 32, 32), load_spec())
    assert not placement.on_npu
    assert "dw3: depthwise conv2d (groups=32" in placement.reason
    assert "1/16 utilised" in placement.reason


def test_float_conv_falls_back_naming_the_dtype():
    placement = conv2d_placement(Conv2dOp("c", "float32", 3, 8, 1), load_spec())
    assert not placement.on_npu and "float32 operands" in placement.reason


def test_every_rule_documents_itself():
    for rule in CONV2D_RULES:
        assert rule.__doc__ and len(rule.__doc__.split()) >= 8
