"""Bad input at compile time gets a LeptonError subclass naming the thing at fault."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import lepton_compiler
from lepton_compiler import InputError, ModelLoadError, OptionError, UnsupportedOperatorError

from .conftest import to_onnx_bytes


def _valid_onnx() -> bytes:
    return to_onnx_bytes(torch.nn.Sequential(torch.nn.Linear(4, 3)).eval(), (torch.randn(2, 4),))


def test_truncated_onnx_bytes():
    data = _valid_onnx()
    with pytest.raises(ModelLoadError, match="ONNX"):
        lepton_compiler.build(data[: len(data) // 2])


def test_garbage_onnx_bytes():
    with pytest.raises(ModelLoadError, match="ONNX"):
        lepton_compiler.build(b"\x00\xffnot a model at all\x13" * 7)


def test_missing_onnx_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such ONNX file"):
        lepton_compiler.build(str(tmp_path / "absent.onnx"))


def test_invalid_graph_fails_checker():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("z", TensorProto.FLOAT,
                                                                           [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match=r"node 'relu0' .*reads 'x'.*dangling input"):
        lepton_compiler.build(model)


def test_unsupported_onnx_ops_are_all_listed():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [
        helper.make_node("LpNormalization", ["x"], ["c1"], name="lpn_a"),
        helper.make_node("LpNormalization", ["c1"], ["c2"], name="lpn_b"),
        helper.make_node("Det", ["c2"], ["y"], name="det_0"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)  # the model itself is valid ONNX
    with pytest.raises(UnsupportedOperatorError) as info:
        lepton_compiler.build(model)
    assert info.value.ops == {"LpNormalization": ["lpn_a", "lpn_b"], "Det": ["det_0"]}
    message = str(info.value)
    assert "lpn_a" in message and "det_0" in message and "2 unsupported" in message


def test_unsupported_torch_ops_are_all_listed():
    class Odd(torch.nn.Module):
        def forward(self, x):
            return torch.special.i0(x).sum() + torch.linalg.det(x).sum()

    with pytest.raises(UnsupportedOperatorError, match="i0") as info:
        lepton_compiler.build(Odd(), (torch.randn(2, 3, 3),))
    assert len(info.value.ops) == 2


def test_torch_model_without_example_inputs():
    with pytest.raises(OptionError, match="example_inputs"):
        lepton_compiler.build(torch.nn.Linear(2, 2))


def test_unknown_target():
    with pytest.raises(OptionError, match="unknown target 'tpu'"):
        lepton_compiler.build(torch.nn.Linear(2, 2), (torch.randn(1, 2),), target="tpu")


def test_unsupported_model_type():
    with pytest.raises(OptionError, match="cannot compile a dict"):
        lepton_compiler.build({"not": "a model"})


def test_run_time_input_errors(cnn_compiled):
    _, x, compiled = cnn_compiled
    name = compiled.inputs[0].name
    with pytest.raises(InputError, match=r"takes 1 input\(s\).*got 2"):
        compiled(x, x)
    with pytest.raises(InputError, match=r"unknown input name\(s\) 'images'"):
        compiled(images=x)
    with pytest.raises(InputError, match=rf"input '{name}': expected shape \[2, 3, 16, 16\]"):
        compiled(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(InputError, match=rf"input '{name}': expected dtype float32, got float64"):
        compiled(np.zeros((2, 3, 16, 16), np.float64))
    with pytest.raises(InputError, match="expected a numpy array"):
        compiled(object())


def _dynamic_batch_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    node = helper.make_node("Relu", ["x"], ["y"], name="relu0")
    return helper.make_model(helper.make_graph([node], "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_dynamic_onnx_shape_needs_example_inputs():
    with pytest.raises(OptionError, match="'x' has a dynamic shape; pass example_inputs"):
        lepton_compiler.build(_dynamic_batch_model())


def test_dynamic_onnx_shape_fixed_by_example_inputs():
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    compiled = lepton_compiler.build(_dynamic_batch_model(), [x])
    assert compiled.inputs[0].shape == (5, 4)
    np.testing.assert_array_equal(compiled(x), np.maximum(x, 0))


def test_example_input_count_must_match_onnx_inputs():
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(OptionError, match=r"1 input\(s\), got 2 example"):
        lepton_compiler.build(_dynamic_batch_model(), [x, x])
