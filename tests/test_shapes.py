"""Input shapes: ONNX exports with symbolic dims compile at the example's shapes, and one
artifact serves several shape sets (``build(..., shapes=[...])``) with its weights stored once."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers

import lepton_compiler as lc
import lepton_runtime
from lepton_compiler.errors import OptionError

BATCHES, LENGTHS = (1, 2, 4), (8, 16)


class _Encoder(torch.nn.Module):
    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state


def _tokens(rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray, ...]:
    ids = rng.integers(1, 200, (batch, length))
    mask = np.ones((batch, length), np.int64)
    mask[0, length // 2:] = 0  # a padded sequence
    return ids, mask


@pytest.fixture(scope="module")
def dynamic_bert() -> bytes:
    """A Hugging Face BertModel exported to ONNX with dynamic [batch, sequence] inputs."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64)
    encoder = _Encoder(transformers.BertModel(config).eval()).eval()
    ids, mask = (torch.from_numpy(a) for a in _tokens(np.random.default_rng(0), 2, 16))
    buf = io.BytesIO()
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(encoder, (ids, mask), buf, dynamo=False, opset_version=17,
                      input_names=["ids", "mask"], output_names=["hidden"],
                      dynamic_axes={"ids": axes, "mask": axes})
    return buf.getvalue()


def _onnxruntime(data: bytes, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": ids, "mask": mask})[0]


def test_hf_encoder_with_symbolic_dims_compiles_from_example_inputs(dynamic_bert):
    dims = [[d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in onnx.load_from_string(dynamic_bert).graph.input]
    assert dims == [["batch", "sequence"]] * 2
    rng = np.random.default_rng(1)
    ids, mask = _tokens(rng, 2, 16)
    compiled = lc.build(dynamic_bert, (ids, mask))
    np.testing.assert_allclose(compiled(ids, mask), _onnxruntime(dynamic_bert, ids, mask),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(lepton_runtime.InputError, match=r"input 'ids': expected shape \[2, 16\]"):
        compiled(*_tokens(rng, 4, 16))


def test_one_artifact_serves_every_compiled_shape(dynamic_bert, tmp_path):
    rng = np.random.default_rng(2)
    shapes = [{"ids": (b, n), "mask": (b, n)} for b in BATCHES for n in LENGTHS]
    multi = lc.build(dynamic_bert, _tokens(rng, 2, 16), shapes=shapes)
    assert multi.build_info["shapes"] == [{k: list(v) for k, v in s.items()} for s in shapes]
    for b in BATCHES:
        for n in LENGTHS:
            ids, mask = _tokens(rng, b, n)
            np.testing.assert_allclose(multi(ids, mask), _onnxruntime(dynamic_bert, ids, mask),
                                       rtol=1e-4, atol=1e-5)
    # bit-identical to builds at one shape (the smallest and the largest set)
    singles = {}
    for b, n in ((1, 8), (4, 16)):
        ids, mask = _tokens(rng, b, n)
        singles[b, n] = lc.build(dynamic_bert, (ids, mask))
        np.testing.assert_array_equal(multi(ids, mask), singles[b, n](ids, mask))
    # a shape set that was not compiled is refused with the list of those that were
    with pytest.raises(lepton_runtime.InputError, match=r"ids\[3, 8\].*not among the 6 shape "
                       r"sets.*ids\[1, 8\], mask\[1, 8\]; ids\[1, 16\]"):
        multi(*_tokens(rng, 3, 8))
    # weights stored once: the constants shared by all six plans are in the blob once (only
    # the position-embedding slices folded per sequence length differ)
    one = singles[4, 16].build_info["weights_bytes"]
    assert multi.build_info["weights_bytes"] < 1.5 * one
    path = multi.export(tmp_path / "multi.lepton")
    info = lepton_runtime.inspect(path)
    assert info["members"]["weights.bin"] == multi.build_info["weights_bytes"]
    assert len(info["shapes"]) == 6 and info["shapes"][5] == {"ids": [4, 16], "mask": [4, 16]}
    session = lepton_runtime.load(path)
    ids, mask = _tokens(rng, 2, 8)
    np.testing.assert_array_equal(session(ids, mask), multi(ids, mask))
    shown = subprocess.run([sys.executable, "-m", "lepton_compiler.cli", "inspect", str(path)],
                           capture_output=True, text=True, check=True).stdout
    assert "6 compiled shape sets" in shown and "ids[4, 16], mask[4, 16]" in shown


def test_torch_module_with_several_batch_sizes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(),
                                torch.nn.Linear(16, 4)).eval()
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    compiled = lc.build(model, (x,), shapes=[[(1, 8)], [(2, 8)], [(5, 8)]])
    for batch in (1, 2, 5):
        xb = np.resize(x, (batch, 8))
        with torch.no_grad():
            want = model(torch.from_numpy(xb)).numpy()
        np.testing.assert_allclose(compiled(xb), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shapes, message", [
    ([[(1, 8), (1, 8)]], r"shapes\[0\] must give one shape per input \(1\)"),
    ([[(1, 8)], [(1, 8)]], r"shapes\[1\] repeats the shape set"),
    ([[(1, 0)]], r"input 'input' needs 2 positive dimensions"),
    ([{"x": (1, 8)}], r"unknown input\(s\) \['x'\]"),
    ([], "non-empty list"),
])
def test_bad_shape_sets_are_refused(shapes, message):
    model = torch.nn.Linear(8, 4).eval()
    with pytest.raises(OptionError, match=message):
        lc.build(model, (np.zeros((2, 8), np.float32),), shapes=shapes)


def test_shape_sets_of_a_quantized_build_are_refused_for_now():
    model = torch.nn.Linear(8, 4).eval()
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(OptionError, match="float models only"):
        lc.build(model, (x,), shapes=[[(1, 8)], [(2, 8)]],
                 quantize=lc.QuantConfig(calibration_data=[(x,)]))
