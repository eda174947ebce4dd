"""Quantization that survives real activations: attention masks hold -inf or finfo.min where a
token is padding. Calibration leaves those sentinel values out of the ranges, and a layer
that would have to carry them in int8 stays float with its reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

import lepton_compiler as lc


class _Encoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, mask):
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state


def _tokens(rng, vocab=200, length=16):
    ids = rng.integers(1, vocab, (1, length))
    mask = np.ones((1, length), np.int64)
    real = int(rng.integers(5, length))
    mask[0, real:] = 0
    ids[0, real:] = 0
    return ids, mask


@pytest.fixture(scope="module")
def bert_int8():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=128,
                                     max_position_embeddings=64)
    encoder = _Encoder(transformers.BertModel(config).eval()).eval()
    rng = np.random.default_rng(0)
    calibration = [_tokens(rng) for _ in range(8)]
    ids, mask = _tokens(rng)
    compiled = lc.build(encoder, (torch.from_numpy(ids), torch.from_numpy(mask)),
                        target="lepton", quantize=lc.QuantConfig(calibration_data=calibration))
    return encoder, compiled, rng


def test_hf_bert_with_a_padding_mask_builds_int8_with_embeddings_close_to_float(bert_int8):
    encoder, compiled, rng = bert_int8
    summary = compiled.quantization.summary()
    dense = [n for n in summary["quantized"] if n.startswith(("dense", "matmul"))]
    assert len(dense) >= 12  # Q, K, V, output and both FFN layers of each block, in int8
    for _ in range(3):
        ids, mask = _tokens(rng)
        with torch.no_grad():
            want = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        got = compiled(ids, mask)
        real = mask[0].astype(bool)  # the embeddings of real tokens (padding is don't-care)
        f, q = want[0, real].ravel(), got[0, real].ravel()
        assert float(f @ q / np.linalg.norm(f) / np.linalg.norm(q)) >= 0.99


def test_calibration_records_mask_values_as_sentinels(bert_int8):
    _, compiled, _ = bert_int8
    table = compiled.quantization.table
    masked = table.sentinels()
    assert masked, "the additive mask holds -inf/finfo.min on padded samples"
    for name in masked:
        t = table.tensors[name]
        assert np.isfinite(t["lo"]) and np.isfinite(t["hi"]) and t["sentinels"] > 0


class _MaskedAdd(torch.nn.Module):
    """An add of two same-shape activations (an int8 kind) where one holds -inf."""

    def forward(self, x, keep):
        return torch.relu(x) + torch.log(keep)  # 0 where kept, -inf where masked


def test_a_layer_that_would_carry_mask_values_stays_float_with_its_reason(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    keep = (rng.random((2, 8)) > 0.3).astype(np.float32)
    compiled = lc.build(_MaskedAdd().eval(), (x, keep), target="lepton",
                        quantize=lc.QuantConfig(calibration_data=[(x, keep)]))
    reasons = compiled.quantization.summary()["float"]
    assert any("mask values" in r for r in reasons.values()), reasons
    want = _MaskedAdd()(torch.from_numpy(x), torch.from_numpy(keep)).numpy()
    got = compiled(x, keep)
    assert np.array_equal(np.isneginf(got), np.isneginf(want))
    np.testing.assert_allclose(got[keep > 0], want[keep > 0], atol=0.05)
    path = compiled.quantization.table.save(tmp_path / "table.json")
    loaded = lc.CalibrationTable.load(path)
    assert loaded.sentinels() == compiled.quantization.table.sentinels() != set()
