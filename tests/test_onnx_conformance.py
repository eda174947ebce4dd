"""ONNX node tests (onnx's own generators, the cases behind ``benchmarks/onnx_conformance``)
for every class of op this project imports beyond TVM's importer, and for every refusal.

Each passing case is compiled with the public API at its inputs' shapes and compared with
onnx's expected outputs the way ONNX's backend runner compares them (count, shape, dtype,
then ``assert_allclose(rtol=1e-3, atol=1e-7)``); each refused case must raise a
``LeptonError`` naming the op (and the reason, for an attribute Lepton cannot compute
exactly), never a wrong answer.
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_compiler as lc
from lepton_compiler.errors import UnsupportedOperatorError

#: One or more cases per fixed class, named by the onnx test they come from.
PASSING = [
    # ops TVM lacks or imports wrongly, expanded into their ONNX function bodies
    "test_attention_4d", "test_attention_4d_gqa", "test_attention_4d_attn_mask_bool",
    "test_attention_4d_causal_fp16", "test_rotary_embedding", "test_nllloss_NCd1_weight",
    "test_sce_mean_weight", "test_celu", "test_swiglu", "test_mish",
    "test_rms_normalization_3d_axis1_epsilon", "test_center_crop_pad_crop",
    # inputs that decide shapes, pinned to the example's values
    "test_reshape_extended_dims", "test_reduce_sum_keepdims_example",
    "test_resize_upsample_scales_nearest", "test_constant_pad", "test_unsqueeze_axis_0",
    "test_split_variable_parts_1d_opset13", "test_range_float_type_positive_delta",
    "test_tile", "test_expand_dim_changed", "test_slice",
    # Shape/Size chains folded at the static shapes; constant outputs
    "test_layer_normalization_2d_axis1_expanded", "test_shape_start_1", "test_size",
    "test_constant", "test_blackmanwindow_expanded",
    # zero-size dims
    "test_reduce_sum_empty_set", "test_reduce_min_empty_set", "test_slice_start_out_of_bounds",
    # element types
    "test_add_uint16", "test_max_uint32", "test_min_uint64",
    # op/attribute combinations rewritten to be exact
    "test_bitshift_left_int32_shift_ge_width", "test_bitshift_right_int32_negative_shift",
    "test_mod_float_edge_cases_fmod_0_float32", "test_mod_float_edge_cases_fmod_0_float64",
    "test_isinf_negative", "test_isinf_positive", "test_dropout_default_mask",
    "test_attention_23_boolmask_fullymasked_row_nan_robustness", "test_cosh", "test_sinh",
]

#: Refused with the reason (an op/attribute combination Lepton would compute wrongly).
REFUSED_INEXACT = {
    "test_batchnorm_example_training_mode": ("BatchNormalization", "training_mode=1"),
    "test_convtranspose_output_shape": ("ConvTranspose", "output_shape"),
    "test_roialign_mode_max": ("RoiAlign", "mode='max'"),
    "test_spacetodepth_crd_mode_example": ("SpaceToDepth", "mode='CRD'"),
    "test_resize_downsample_scales_linear_antialias": ("Resize", "antialias=1"),
    "test_resize_upsample_sizes_nearest": ("Resize", "not an integer factor"),
    "test_training_dropout": ("Dropout", "random mask"),
}


@pytest.fixture(scope="module")
def cases() -> dict:
    from onnx.backend.test.case.node import collect_testcases

    return {case.name: case for case in collect_testcases()}


def _inputs_outputs(case):
    inputs, outputs = case.data_sets[0]
    return [np.asarray(i) for i in inputs], [np.asarray(o) for o in outputs]


@pytest.mark.parametrize("name", PASSING)
def test_node_case_matches_onnx(cases, name):
    case = cases[name]
    inputs, expected = _inputs_outputs(case)
    result = lc.build(case.model, tuple(inputs))(*inputs)
    got = list(result) if isinstance(result, tuple) else [result]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype
        if e.dtype == np.bool_ or e.dtype.kind in "iu":
            np.testing.assert_array_equal(g, e)
        else:
            np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("name", sorted(REFUSED_INEXACT))
def test_inexact_combination_is_refused_with_the_reason(cases, name):
    case = cases[name]
    inputs, _ = _inputs_outputs(case)
    op, reason = REFUSED_INEXACT[name]
    with pytest.raises(UnsupportedOperatorError) as info:
        lc.build(case.model, tuple(inputs))
    assert op in info.value.ops and reason in info.value.reasons[op]
    assert reason in str(info.value)


@pytest.mark.parametrize("name, op", [("test_nonzero_example", "NonZero"),
                                      ("test_unique_sorted_with_axis", "Unique"),
                                      ("test_compress_0", "Compress")])
def test_data_dependent_shapes_are_refused_naming_the_node(cases, name, op):
    inputs, _ = _inputs_outputs(cases[name])
    with pytest.raises(UnsupportedOperatorError, match=rf"{op}: used by #0 .*depends on input "
                       "values") as info:
        lc.build(cases[name].model, tuple(inputs))
    assert info.value.ops == {op: ["#0"]}


def test_pinned_input_other_value_is_refused_by_the_artifact(cases, tmp_path):
    """Reshape's target shape is a graph input: the artifact is built for the example's
    value, checks it at every call (also after export and load) and names the input."""
    import lepton_runtime

    case = cases["test_reshape_extended_dims"]
    inputs, expected = _inputs_outputs(case)
    compiled = lc.build(case.model, tuple(inputs))
    np.testing.assert_array_equal(compiled(*inputs), expected[0])
    other = [inputs[0], inputs[1][::-1].copy()]
    with pytest.raises(lepton_runtime.InputError, match=r"input 'shape'.*fixed to"):
        compiled(*other)
    session = lepton_runtime.load(compiled.export(tmp_path / "m.lepton"))
    np.testing.assert_array_equal(session(*inputs), expected[0])
    with pytest.raises(lepton_runtime.InputError, match="input 'shape'"):
        session(*other)
    assert any("shape" in pin for pin in lepton_runtime.inspect(tmp_path / "m.lepton")["pins"])


def test_shape_input_without_example_is_an_option_error(cases):
    with pytest.raises(lc.OptionError, match=r"'shape' decides a shape in .*Reshape"):
        lc.build(cases["test_reshape_extended_dims"].model)


def test_shape_input_example_of_another_dtype_is_an_option_error(cases):
    """Zeros of the wrong dtype (what ``--input-shape`` would make) must not be pinned."""
    case = cases["test_reshape_extended_dims"]
    inputs, _ = _inputs_outputs(case)
    with pytest.raises(lc.OptionError, match=r"'shape' decides a shape.*declared dtype"):
        lc.build(case.model, (inputs[0], inputs[1].astype(np.float32)))
