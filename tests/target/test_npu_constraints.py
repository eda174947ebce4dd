"""Offload constraints: each rule's docstring is the user-facing rule, failures say why."""

from __future__ import annotations

from lepton_compiler.target import npu_constraints as rules
from lepton_compiler.target.npu_constraints import OpFacts, apply
from lepton_compiler.target.npu_vector import VectorWork
from lepton_compiler.target.spec import load_spec

CONV = (rules.int8_operands, rules.conv_engine)


def _depthwise(channels: int, width: int) -> OpFacts:
    work = VectorWork.of("conv", groups=channels, n=1, h=8, w=width, cin=channels,
                         cout=channels, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, top=1, left=1,
                         oh=8, ow=width, in_zp=0)
    return OpFacts("dw3", "conv2d", "relax.nn.conv2d", "int8", channels, channels, channels,
                   (8 * width, channels, 9), work)


def test_dense_int8_conv_runs_on_the_npu():
    facts = OpFacts("conv1", "conv2d", "relax.nn.conv2d", "int8", 64, 64, 1, (64, 64, 576))
    assert apply(CONV, facts, load_spec()).on_npu


def test_depthwise_conv_runs_on_the_vector_unit_when_a_band_fits():
    assert apply(CONV, _depthwise(32, 56), load_spec()).on_npu
    placement = apply(CONV, _depthwise(32, 40_000), load_spec())
    assert not placement.on_npu
    assert "dw3: vector-unit conv: one band needs" in placement.reason
    assert "input SRAM" in placement.reason


def test_float_conv_falls_back_naming_the_dtype():
    facts = OpFacts("c", "conv2d", "relax.nn.conv2d", "float32", 3, 8, 1, (64, 8, 27))
    placement = apply(CONV, facts, load_spec())
    assert not placement.on_npu and "float32 operands" in placement.reason


def test_a_layer_without_a_vector_form_says_so():
    facts = OpFacts("m", "mean", "relax.mean", "int8")
    placement = apply(rules.VECTOR_RULES, facts, load_spec())
    assert not placement.on_npu and "no vector-unit form" in placement.reason


def test_every_rule_documents_itself():
    for rule in (*rules.RULES, *rules.VECTOR_RULES, rules.fits_sram):
        assert rule.__doc__ and len(rule.__doc__.split()) >= 8
