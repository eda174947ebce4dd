"""Every refusal of the ONNX validator, each naming what is at fault."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import lepton_compiler
from lepton_compiler import Limits, ModelLoadError, OptionError
from lepton_compiler.frontend import load_onnx


def _conv_model(**conv_attrs) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    attrs = {"pads": [1, 1, 1, 1], **conv_attrs}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", **attrs),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_a_valid_model_passes_and_compiles_correctly():
    model = _conv_model()
    load_onnx(model)
    compiled = lepton_compiler.build(model)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    import onnxruntime as ort

    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(compiled(x), ref, rtol=1e-5, atol=1e-5)


def _mutate(fn):
    model = _conv_model()
    fn(model)
    return model


CASES = {
    "cycle": (lambda m: m.graph.node.reverse(), r"node 'relu' .*reads 'c' before node 'conv'"),
    "duplicate": (lambda m: m.graph.node[1].output.__setitem__(0, "c"),
                  r"node 'relu' .*writes 'c', which node 'conv' .*already defines"),
    "unproduced output": (lambda m: m.graph.output[0].__setattr__("name", "zz"),
                          r"graph output 'zz' is not produced"),
    "negative dim": (lambda m: m.graph.initializer[0].dims.__setitem__(0, -4),
                     r"initializer 'w' has a negative dimension"),
    "huge dims": (lambda m: m.graph.initializer[0].dims.__setitem__(0, 1 << 40),
                  r"initializer 'w' declares .* more than \d+ elements"),
    "short data": (lambda m: m.graph.initializer[0].__setattr__("raw_data", b"\0" * 8),
                   r"initializer 'w' declares \[4, 3, 3, 3\] \(432 bytes\) but stores 8"),
    "bad dtype": (lambda m: m.graph.initializer[0].__setattr__("data_type", 8),
                  r"initializer 'w' has data type STRING"),
    "negative input dim": (lambda m: m.graph.input[0].type.tensor_type.shape.dim[2]
                           .__setattr__("dim_value", -2),
                           r"graph input 'x' declares dimension -2"),
    "rank": (lambda m: m.graph.input[0].type.tensor_type.shape.dim.extend(
        [helper.make_tensor_value_info("q", 1, [1]).type.tensor_type.shape.dim[0]] * 9),
        r"graph input 'x' has rank 13"),
    "strides": (lambda m: m.graph.node[0].attribute.append(helper.make_attribute("strides",
                                                                                 [0, 1])),
                r"node 'conv' \(Conv\) has strides=\[0, 1\]"),
    "pads": (lambda m: m.graph.node[0].attribute[0].ints.__setitem__(0, -1),
             r"node 'conv' \(Conv\) has pads=\[-1, 1, 1, 1\]"),
    "group": (lambda m: m.graph.node[0].attribute.append(helper.make_attribute("group", -2)),
              r"node 'conv' \(Conv\) has group=-2"),
    "attribute type": (lambda m: m.graph.node[0].attribute.append(
        helper.make_attribute("group", 1.5)), r"node 'conv' \(Conv\) is invalid"),
    "unknown op": (lambda m: m.graph.node[1].__setattr__("op_type", "Frobnicate"),
                   r"node 'relu' \(Frobnicate\) is invalid"),
    "shape mismatch": (lambda m: m.graph.initializer[0].dims.__setitem__(1, 2) or
                       m.graph.initializer[0].__setattr__("raw_data", b"\0" * 288),
                       r"node 'conv' \(Conv\): input 'x' has 3 channels but weight 'w'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_models_are_refused_naming_the_fault(case):
    mutate, message = CASES[case]
    with pytest.raises(ModelLoadError, match=message):
        load_onnx(_mutate(mutate))


def test_limits_are_enforced_and_checked():
    model = _conv_model()
    with pytest.raises(ModelLoadError, match="2 nodes exceed the limit of 1"):
        load_onnx(model, Limits(max_nodes=1))
    with pytest.raises(ModelLoadError, match=r"initializer 'w' declares .* more than 100"):
        load_onnx(model, Limits(max_elements=100))
    with pytest.raises(ModelLoadError, match="over the model size limit of 10 bytes"):
        load_onnx(model.SerializeToString(), Limits(max_model_bytes=10))
    with pytest.raises(ModelLoadError, match=r"Limits\.max_rank"):
        load_onnx(model, Limits(max_rank=3))
    with pytest.raises(OptionError, match=r"Limits\.max_nodes must be a positive integer"):
        Limits(max_nodes=0)
    with pytest.raises(ModelLoadError, match="exceeds the model size limit"):
        _build_path(model, Limits(max_model_bytes=10))


def _build_path(model, limits, tmp=None):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        onnx.save(model, str(path))
        return lepton_compiler.build(str(path), limits=limits)


def _external(tmp_path, location, offset=0, length=None, data_bytes=432):
    model = _conv_model()
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        w.external_data.add(key=k, value=v)
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "weights.bin").write_bytes(np.ones(data_bytes // 4, np.float32).tobytes())
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_the_folder_loads(tmp_path):
    proto = load_onnx(_external(tmp_path, "weights.bin"))
    assert numpy_helper.to_array(proto.graph.initializer[0]).shape == (4, 3, 3, 3)


@pytest.mark.parametrize("location,offset,length,message", [
    ("../weights.bin", 0, None, "must be a relative path inside the model's folder"),
    ("/etc/passwd", 0, None, "must be a relative path inside the model's folder"),
    ("absent.bin", 0, None, "external data file 'absent.bin' is missing"),
    ("weights.bin", 400, None, r"offset 400, length 432.*does not fit"),
    ("weights.bin", 0, 16, r"length 16.*needs 432 bytes"),
    ("weights.bin", "x", None, "non-numeric external data offset"),
])
def test_external_data_is_confined_and_sized(tmp_path, location, offset, length, message):
    with pytest.raises(ModelLoadError, match=message):
        load_onnx(_external(tmp_path, location, offset, length))


def test_external_data_through_a_symlink_out_of_the_folder_is_refused(tmp_path):
    path = _external(tmp_path, "link.bin")
    (tmp_path / "outside.bin").write_bytes(b"\0" * 432)
    (path.parent / "link.bin").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(ModelLoadError, match="resolves outside the model's folder"):
        load_onnx(path)


def test_external_data_from_bytes_is_refused(tmp_path):
    data = _external(tmp_path, "weights.bin").read_bytes()
    with pytest.raises(ModelLoadError, match="load the model from its path"):
        load_onnx(data)
