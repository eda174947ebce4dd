"""End to end: torch and ONNX models compiled for the host match their oracles."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import lepton_compiler

from .conftest import MODELS, relative_error, to_onnx_bytes


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    make_model, make_input = MODELS[request.param]
    model = make_model()
    example = make_input(np.random.default_rng(1))
    return request.param, model, example


def test_torch_model_matches_eager(case):
    name, model, example = case
    compiled = lepton_compiler.build(model, example)
    fresh = MODELS[name][1](np.random.default_rng(2))  # not the tracing input
    with torch.no_grad():
        expected = model(*fresh).numpy()
    actual = compiled(*fresh)
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) <= 1e-4


def test_onnx_model_matches_onnxruntime(case, tmp_path):
    name, model, example = case
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(to_onnx_bytes(model, example))
    compiled = lepton_compiler.build(str(path))
    fresh = [t.numpy() for t in MODELS[name][1](np.random.default_rng(3))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(session.get_inputs(), fresh, strict=True)}
    (expected,) = session.run(None, feeds)
    actual = compiled(*fresh)
    assert relative_error(actual, expected) <= 1e-4
    assert [i.name for i in compiled.inputs] == [i.name for i in session.get_inputs()]


def test_calling_conventions(cnn_compiled):
    _, x, compiled = cnn_compiled
    (info,) = compiled.inputs
    by_position = compiled(x)
    by_name = compiled(**{info.name: x.numpy()})
    by_mapping = compiled({info.name: x})
    assert np.array_equal(by_position, by_name) and np.array_equal(by_name, by_mapping)
    assert isinstance(by_position, np.ndarray) and by_position.dtype == np.float32
    assert compiled.outputs[0].shape == tuple(by_position.shape)
    # Results are owned by the caller: a later run does not overwrite them.
    keep = by_position.copy()
    compiled(x * 2)
    assert np.array_equal(keep, by_position)


def test_multiple_outputs_and_reshape_views():
    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(12, 6)

        def forward(self, x):
            y = self.fc(x)
            return y.reshape(2, 3, 6), torch.relu(y)

    model = TwoHeads().eval()
    x = torch.randn(2, 3, 12)
    compiled = lepton_compiler.build(model, (x.reshape(6, 12),))
    a, b = compiled(x.reshape(6, 12))
    ea, eb = (t.detach().numpy() for t in model(x.reshape(6, 12)))
    assert relative_error(a, ea) <= 1e-5 and relative_error(b, eb) <= 1e-5
    assert [o.name for o in compiled.outputs] == ["output0", "output1"]


def test_batch_norm_is_folded_into_conv(cnn_compiled):
    _, _, compiled = cnn_compiled
    # Every conv is followed by batch-norm in the CNN; after folding no kernel normalises.
    names = compiled.manifest["kernels"]
    assert not [n for n in names if "batch_norm" in n or "rsqrt" in n or "divide" in n]


def test_lepton_target_float_model_falls_back_to_host_with_reasons(tmp_path):
    from lepton_compiler.target.spec import load_spec

    model = MODELS["mlp"][0]()
    (x,) = MODELS["mlp"][1](np.random.default_rng(4))
    compiled = lepton_compiler.build(model, (x,), target="lepton")
    with torch.no_grad():
        assert relative_error(compiled(x), model(x).numpy()) <= 1e-4
    manifest = compiled.manifest
    assert manifest["target"]["kind"] == "lepton"
    assert manifest["spec_fingerprint"] == load_spec().fingerprint()
    fallbacks = compiled.build_info["fallbacks"]
    assert fallbacks and all("int8" in f["reason"] for f in fallbacks)

    data = load_spec().to_dict()
    data["matrix"].update(tile_m=8, tile_n=8, tile_k=8)
    other = lepton_compiler.build(model, (x,), target="lepton", spec=data)
    assert other.manifest["spec_fingerprint"] != manifest["spec_fingerprint"]


def test_spec_errors_surface_before_compiling(tmp_path):
    from lepton_compiler.errors import OptionError, SpecError

    bad = tmp_path / "bad.toml"
    bad.write_text("[matrix]\ntile_m = 12\n")
    model = MODELS["mlp"][0]()
    with pytest.raises(SpecError, match=r"bad\.toml"):
        lepton_compiler.build(model, (torch.zeros(8, 64),), target="lepton", spec=bad)
    with pytest.raises(OptionError, match="spec= describes the Lepton NPU"):
        lepton_compiler.build(model, (torch.zeros(8, 64),), spec=bad)
