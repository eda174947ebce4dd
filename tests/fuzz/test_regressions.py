"""Bugs the fuzz campaigns found, minimised into regression tests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lepton_compiler
from lepton_compiler import ModelLoadError, QuantConfig


def _model(nodes, inits, x_shape, y_shape):
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=10).SerializeToString()


def _conv_clip(bounds_as_inputs: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    inits = {"w": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
             "b": (rng.standard_normal(8) * 0.1).astype(np.float32),
             "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="relu6")]
    if bounds_as_inputs:  # bounds computed in the graph, not constants
        nodes.insert(0, helper.make_node("Identity", ["hi"], ["hi2"], name="id"))
        nodes[-1].input[2] = "hi2"
    return _model(nodes, inits, [1, 3, 8, 8], [1, 8, 8, 8])


def test_onnx_relu6_after_an_int8_conv_compiles_fused_and_bit_exact():
    """Differential campaign, int8 family: ONNX Clip imported as two call_tir kernels made
    the quantized module lose their PrimFuncs ("There is no definition of maximum"), and
    kept ReLU6 out of the int8 conv. Now Clip with constant bounds is relax clip, fused."""
    data = _conv_clip()
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    q = lepton_compiler.build(data, target="lepton",
                              quantize=QuantConfig(calibration_data=[(x,), (x * 2,)]))
    assert np.array_equal(q(x), q.quantization.reference(x))
    assert q.build_info["fallbacks"] == [] or all(
        f["op"] != "relax.call_tir" for f in q.build_info["fallbacks"])
    # the conv with its ReLU6 fused is one matrix-engine kernel (the NCHW output's
    # transpose is the other NPU kernel, on the DMA engine)
    conv = [k for k in q.build_info["npu_kernels"] if "conv2d" in k]
    assert len(conv) == 1 and len(q.build_info["npu_kernels"]) == 2


def test_onnx_clip_with_computed_bounds_keeps_tvms_conversion_and_quantizes():
    data = _conv_clip(bounds_as_inputs=True)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(lepton_compiler.build(data)(x), ref, rtol=1e-5, atol=1e-5)
    q = lepton_compiler.build(data, target="lepton",
                              quantize=QuantConfig(calibration_data=[(x,)]))
    assert np.abs(q(x) - ref).max() < 0.1  # the clip stays a float layer between int8 ones


def test_an_import_error_names_the_node():
    """Malformed campaign: LayerNormalization with gamma and beta of different shapes passes
    the ONNX checker; TVM's importer refused it without saying which node."""
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln0",
                              axis=-1)]
    data = _model(nodes, {"g": np.ones(8, np.float32), "b": np.ones(4, np.float32)},
                  [1, 3, 8], [1, 3, 8])
    with pytest.raises(ModelLoadError, match=r"node 'ln0' \(LayerNormalization\): importing"):
        lepton_compiler.build(data)


def test_a_manifest_edited_with_a_recomputed_digest_is_refused(tmp_path):
    """Artifact campaign: a manifest without ``outputs`` (digest recomputed) loaded."""
    import lepton_runtime

    data = _conv_clip()
    path = lepton_compiler.build(data).export(tmp_path / "m.lepton")
    members = []
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            members.append((info, tar.extractfile(info).read()))
    manifest = json.loads(dict((i.name, b) for i, b in members)["manifest.json"])
    for key, value in (("outputs", None), ("report", None), ("extra", 1),
                       ("inputs", "x")):
        edited = dict(manifest)
        if value is None:
            del edited[key]
        else:
            edited[key] = value
        raw = json.dumps(edited).encode()
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for info, blob in members:
                blob = raw if info.name == "manifest.json" else \
                    hashlib.sha256(raw).hexdigest().encode() \
                    if info.name == "manifest.sha256" else blob
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        bad = tmp_path / f"{key}.lepton"
        bad.write_bytes(out.getvalue())
        with pytest.raises(lepton_runtime.ArtifactIntegrityError, match=repr(key)[1:-1]):
            lepton_runtime.load(bad)
    assert lepton_runtime.load(path) is not None


def test_a_model_whose_output_folds_to_a_constant_returns_it():
    """--long malformed campaign: LayerNormalization with its data input dropped folds the
    whole graph to a constant; the layer reader raised a KeyError (later: a refusal). The
    constant output is now returned as stored, equal to onnxruntime's."""
    import onnxruntime as ort

    nodes = [helper.make_node("Add", ["x", "x"], ["unused"], name="add0"),
             helper.make_node("LayerNormalization", ["g", "b"], ["y"], name="ln0", axis=-1)]
    g = np.linspace(-1, 2, 8, dtype=np.float32)
    data = _model(nodes, {"g": g, "b": np.ones(8, np.float32)}, [1, 8], [8])
    x = np.ones((1, 8), np.float32)
    expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_allclose(lepton_compiler.build(data)(x), expected, rtol=1e-5, atol=1e-6)


def test_a_flag_attribute_other_than_0_or_1_is_refused():
    """--long malformed campaign: ReduceMean keepdims=9 compiled to shape (2, 1, 6) while
    onnxruntime returned (2, 6)."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["y"], name="reduce0", axes=[1],
                              keepdims=9)]
    data = _model(nodes, {}, [2, 7, 6], [2, 1, 6])
    with pytest.raises(ModelLoadError, match=r"node 'reduce0' \(ReduceMean\) has keepdims=9"):
        lepton_compiler.build(data)
