"""Int8 post-training quantization: accuracy on real data, bit-exactness against the numpy
integer reference on both targets and both execution modes, calibration methods, tables,
overrides, per-layer analysis and every edge case's error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lepton_compiler as lc
import lepton_runtime
from lepton_compiler.examples import datasets
from lepton_compiler.passes.calibrate import BINS, Stats, choose_range, qparams
from lepton_compiler.passes.quantize import quantize_weights
from lepton_compiler.target import reference as ref

from .conftest import to_onnx_bytes

BATCH = 30


@pytest.fixture(scope="module")
def digits():
    """The digits CNN trained on scikit-learn's bundled digits, with its float predictions."""
    data = datasets.load_digits()
    model = datasets.train_digits_cnn(data)

    def predict(batch):
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()

    acc, preds = datasets.accuracy(predict, data.x_test, data.y_test, BATCH)
    calib = [(b,) for b in datasets.batches(data.x_train, BATCH)[:12]]
    return data, model, acc, preds, calib


def _check_accuracy(compiled, digits):
    data, _, float_acc, float_preds, _ = digits
    int8_acc, preds = datasets.accuracy(compiled, data.x_test, data.y_test, BATCH)
    agreement = float((preds == float_preds).mean())
    assert float_acc >= 0.95, f"float accuracy {float_acc:.3f}"
    assert int8_acc >= float_acc - 0.01, f"int8 {int8_acc:.3f} vs float {float_acc:.3f}"
    assert agreement >= 0.98, f"top-1 agreement {agreement:.3f}"
    return int8_acc


def test_digits_cnn_int8_on_the_npu_keeps_float_accuracy(digits):
    data, model, _, _, calib = digits
    config = lc.QuantConfig(calibration_data=calib, method="minmax", per_channel=True)
    compiled = lc.build(model, (data.x_test[:BATCH],), target="lepton", quantize=config)
    _check_accuracy(compiled, digits)
    info = compiled.build_info
    assert len(info["npu_kernels"]) >= 4  # three convs and two linears (some share a kernel)
    assert set(info["quantization"]["quantized"]) >= {"conv2d_0", "conv2d_1", "conv2d_2",
                                                      "add_0", "dense_0", "dense_1"}


def test_digits_cnn_int8_through_onnx_keeps_float_accuracy(digits):
    data, model, _, _, calib = digits
    onnx_bytes = to_onnx_bytes(model, (torch.from_numpy(data.x_test[:BATCH]),))
    compiled = lc.build(onnx_bytes, quantize=lc.QuantConfig(calibration_data=calib))
    _check_accuracy(compiled, digits)
    assert "dense_1" in compiled.build_info["quantization"]["quantized"]


def _random_calibration(shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape).astype(np.float32),) for _ in range(n)]


def _global_pool_cnn():
    """conv (stride 2) -> ReLU -> global average pool (a spatial mean) -> linear."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 24, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(24, 10)).eval()


@pytest.mark.parametrize("name, shape", [("small_cnn", (2, 3, 16, 16)),
                                         ("linear_block", (2, 16, 64)),
                                         ("global_pool_cnn", (2, 3, 12, 12))])
def test_compiled_int8_equals_the_integer_reference_bit_for_bit(name, shape, tmp_path):
    model = _global_pool_cnn() if name == "global_pool_cnn" else getattr(lc.zoo, name)()
    config = lc.QuantConfig(calibration_data=_random_calibration(shape))
    rng = np.random.default_rng(1)
    # Inputs beyond the calibrated range exercise the saturating clamps too.
    inputs = [rng.standard_normal(shape).astype(np.float32) * s for s in (0.5, 1.0, 3.0)]
    for target in ("host", "lepton"):
        compiled = lc.build(model, (inputs[0],), target=target, quantize=config)
        assert not compiled.build_info["quantization"]["float"]  # fully integer
        path = compiled.export(tmp_path / f"{name}-{target}.lepton")
        modes = ("fast", "sim") if target == "lepton" else ("fast",)
        for mode in modes:
            session = lepton_runtime.load(path, mode=mode)
            for x in inputs:
                expected = compiled.quantization.reference(x)
                got = session.run(x)
                assert got.dtype == expected.dtype == np.float32
                assert np.array_equal(got, expected), (target, mode)
        if target == "lepton":
            assert compiled.build_info["npu_kernels"]
            profile = lepton_runtime.load(path, mode="sim").profile(inputs[0])
            npu_rows = [k for k in profile.kernels if k.kernel in compiled.build_info[
                "npu_kernels"]]
            assert npu_rows and all(k.cycles > 0 for k in npu_rows)
            gemm = [k for k in npu_rows if k.counters.get("macs_issued")]
            assert gemm and all(k.macs_useful > 0 for k in gemm)  # matrix-engine layers
            assert profile.total_cycles == sum(k.cycles for k in profile.kernels)


def test_transformer_block_int8_keeps_a_masked_softmax_in_float():
    model = lc.zoo.transformer_block()
    shape = (2, 16, 64)
    config = lc.QuantConfig(calibration_data=_random_calibration(shape))
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    compiled = lc.build(model, (x,), target="lepton", quantize=config)
    summary = compiled.build_info["quantization"]
    # torch's attention masks the scores with where(): that softmax's input is float
    assert any(n.startswith("softmax") for n in summary["float"])
    assert any(n.startswith("layer_norm") for n in summary["quantized"])  # integer layer norm
    assert sum(n.startswith("dense") for n in summary["quantized"]) >= 3
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = compiled(x)
    cosine = float(got.ravel() @ expected.ravel()
                   / (np.linalg.norm(got) * np.linalg.norm(expected)))
    assert cosine > 0.99
    with pytest.raises(lc.QuantizationError, match="stays float"):
        compiled.quantization.reference(x)


# --- quantization arithmetic properties ------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.integers(1, 9))
def test_per_channel_weight_round_trip_error_is_at_most_half_a_step(seed, rows, channels):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, 3, channels)) * rng.uniform(1e-3, 10, channels)
    w[..., rng.integers(channels)] *= rng.integers(0, 2)  # sometimes an all-zero channel
    w_q, scale = quantize_weights(w)
    assert np.all(np.isfinite(scale)) and np.all(scale > 0)
    err = np.abs(w_q.astype(np.float64) * scale - w)
    assert np.all(err <= scale / 2 * (1 + 1e-6) + 1e-12)
    assert np.all(np.abs(w_q) <= 127)


@settings(max_examples=60, deadline=None)
@given(st.floats(-100, 0), st.floats(0, 100), st.integers(0, 2**32 - 1))
def test_activation_round_trip_error_is_at_most_half_a_step(lo, hi, seed):
    scale, zp = qparams(lo, hi)
    assert np.isfinite(scale) and scale > 0 and -128 <= zp <= 127
    rng = np.random.default_rng(seed)
    x = rng.uniform(lo, hi, 200).astype(np.float32)
    back = ref.dequantize(ref.quantize(x, scale, zp), scale, zp)
    # Inside the representable range the error is half a step (plus float32 rounding).
    inside = (x >= (-128 - zp) * scale) & (x <= (127 - zp) * scale)
    err = np.abs(back - x)[inside]
    assert np.all(err <= scale / 2 + 1e-5 * max(abs(lo), abs(hi), 1.0))


# --- calibration methods, determinism and tables ---------------------------------------------

def test_methods_clip_heavy_tails_and_minmax_does_not():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(100_000), [60.0, -55.0]])  # two outliers
    st_ = Stats()
    st_.update_range(x)
    st_.start_histogram()
    st_.update_histogram(x)
    assert st_.hist.sum() == x.size and st_.hist.size == BINS
    assert choose_range(st_, "minmax") == (-55.0, 60.0)
    for method in ("percentile", "entropy"):
        lo, hi = choose_range(st_, method, 99.9)
        assert 2.0 < hi < 30.0 and -30.0 < lo < -2.0, (method, lo, hi)

    def round_trip_mse(lo, hi):
        scale, zp = qparams(lo, hi)
        x32 = x.astype(np.float32)
        return float(np.mean((ref.dequantize(ref.quantize(x32, scale, zp), scale, zp)
                              - x32) ** 2))

    lo, hi = choose_range(st_, "mse")
    assert -55.0 < lo and hi < 60.0  # clips the outliers' tails somewhat ...
    assert round_trip_mse(lo, hi) < round_trip_mse(-55.0, 60.0)  # ... and it pays off


@pytest.mark.parametrize("tails", [True, False])
def test_auto_picks_the_method_whose_range_quantizes_the_tensor_best(tails):
    from lepton_compiler.passes.calibrate import AUTO_CANDIDATES, choose_method

    rng = np.random.default_rng(1)
    x = rng.standard_normal(50_000) if tails else rng.uniform(-3, 3, 50_000)
    if tails:
        x = np.concatenate([x, [60.0, -55.0]])
    st_ = Stats()
    st_.update_range(x)
    st_.start_histogram()
    st_.update_histogram(x)

    def round_trip_mse(lo, hi):
        scale, zp = qparams(lo, hi)
        x32 = x.astype(np.float32)
        return float(np.mean((ref.dequantize(ref.quantize(x32, scale, zp), scale, zp)
                              - x32) ** 2))

    method, (lo, hi) = choose_method(st_)
    assert method in AUTO_CANDIDATES and choose_range(st_, "auto") == (lo, hi)
    errors = {m: round_trip_mse(*choose_range(st_, m)) for m in AUTO_CANDIDATES}
    # On the data itself (not just its histogram) the choice is the best or within 5%.
    assert round_trip_mse(lo, hi) <= min(errors.values()) * 1.05, (method, errors)
    if tails:
        assert method != "minmax"  # two outliers are not worth 10x coarser steps


def test_auto_records_its_choice_per_tensor_and_keeps_accuracy(digits, tmp_path):
    data, model, _, _, calib = digits
    config = lc.QuantConfig(calibration_data=calib[:6], method="auto")
    compiled = lc.build(model, (data.x_test[:BATCH],), target="lepton", quantize=config)
    table = compiled.quantization.table
    chosen = {t["method"] for t in table.tensors.values()}
    assert chosen and chosen <= {"minmax", "percentile", "entropy", "mse"}
    loaded = lc.CalibrationTable.load(table.save(tmp_path / "auto.json"))
    assert loaded.tensors == table.tensors
    _check_accuracy(compiled, digits)


def test_calibration_is_deterministic_and_tables_round_trip(digits, tmp_path):
    data, model, _, _, calib = digits
    example = (data.x_test[:BATCH],)
    config = lc.QuantConfig(calibration_data=calib, method="entropy")
    first = lc.build(model, example, quantize=config)
    second = lc.build(model, example, quantize=config)
    assert first.quantization.table.to_json() == second.quantization.table.to_json()
    path = first.quantization.table.save(tmp_path / "calib.json")
    from_table = lc.build(model, example, quantize=lc.QuantConfig(table=path))
    assert from_table.to_bytes() == first.to_bytes()  # same ranges -> identical artifact
    x = data.x_test[:BATCH]
    assert np.array_equal(from_table(x), first(x))


def test_table_of_another_model_or_malformed_is_refused(digits, tmp_path):
    data, model, _, _, calib = digits
    first = lc.build(model, (data.x_test[:BATCH],),
                     quantize=lc.QuantConfig(calibration_data=calib[:2]))
    path = first.quantization.table.save(tmp_path / "calib.json")
    other = lc.zoo.mlp(in_features=64)
    with pytest.raises(lc.QuantizationError, match="different model"):
        lc.build(other, (np.zeros((4, 64), np.float32),),
                 quantize=lc.QuantConfig(table=path))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(lc.QuantizationError, match=r"bad\.json"):
        lc.build(model, (data.x_test[:BATCH],), quantize=lc.QuantConfig(table=bad))
    raw = json.loads(path.read_text())
    name = next(iter(raw["tensors"]))
    raw["tensors"][name]["lo"] = float("nan")
    bad.write_text(json.dumps(raw))
    with pytest.raises(lc.QuantizationError, match="invalid range"):
        lc.build(model, (data.x_test[:BATCH],), quantize=lc.QuantConfig(table=bad))
    with pytest.raises(lc.QuantizationError, match="not found"):
        lc.build(model, (data.x_test[:BATCH],),
                 quantize=lc.QuantConfig(table=tmp_path / "missing.json"))


def test_skip_and_overrides_control_layers(digits):
    data, model, _, _, calib = digits
    config = lc.QuantConfig(calibration_data=calib[:3], skip=["dense_1"],
                            overrides={"conv2d_0": {"range": (0.0, 8.0)}})
    compiled = lc.build(model, (data.x_test[:BATCH],), quantize=config)
    summary = compiled.build_info["quantization"]
    assert "dense_1" in summary["float"] and "dense_1" not in summary["quantized"]
    params = compiled.quantization.graph.tensors["conv2d_0"]
    assert params.scale == pytest.approx(8.0 / 255, rel=1e-6)
    assert compiled.quantization.table.tensors["conv2d_0"]["hi"] == 8.0
    _check_accuracy(compiled, digits)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "median"}, "unknown calibration method"),
    ({"percentile": 30.0}, "percentile"),
    ({"skip": "dense_1"}, "list of layer names"),
    ({"overrides": {"conv2d_0": {"range": (1.0, 1.0)}}}, "lo < hi"),
    ({"overrides": {"conv2d_0": {"scale": 1.0}}}, "'float' and/or 'range'"),
    ({"max_drop": 0.01}, "needs validation="),
    ({"max_drop": -0.1, "validation": len}, "finite number >= 0"),
    ({"validation": len}, "used with max_drop="),
])
def test_bad_config_is_an_option_error(kwargs, match):
    config = lc.QuantConfig(calibration_data=[np.zeros((1, 64), np.float32)], **kwargs)
    with pytest.raises(lc.OptionError, match=match):
        lc.build(lc.zoo.mlp(), (np.zeros((1, 64), np.float32),), quantize=config)


def test_unknown_layer_names_and_missing_data_are_option_errors():
    model, x = lc.zoo.mlp(), np.zeros((1, 64), np.float32)
    with pytest.raises(lc.OptionError, match=r"no layer named 'conv9'.*dense_0"):
        lc.build(model, (x,), quantize=lc.QuantConfig(calibration_data=[x], skip=["conv9"]))
    with pytest.raises(lc.OptionError, match="calibration_data or a calibration table"):
        lc.build(model, (x,), quantize=lc.QuantConfig())
    with pytest.raises(lc.OptionError, match="QuantConfig"):
        lc.build(model, (x,), quantize="int8")


# --- edge cases ------------------------------------------------------------------------------

def test_all_zero_weight_channel_gets_a_finite_scale_and_stays_exact():
    model = lc.zoo.digits_cnn()
    with torch.no_grad():
        model.conv1.weight[3].zero_()
        model.conv1.bias[3] = 0.25  # the channel is a constant
    shape = (2, 1, 8, 8)
    compiled = lc.build(model, (np.zeros(shape, np.float32),),
                        quantize=lc.QuantConfig(calibration_data=_random_calibration(shape)))
    params = compiled.quantization.graph.params["conv2d_1"]
    assert np.all(np.isfinite(params.weight_scale)) and params.weight_scale[3] > 0
    assert np.all(params.weight[..., 3] == 0)
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    assert np.array_equal(compiled(x), compiled.quantization.reference(x))


def test_constant_activations_get_finite_scales():
    class Constant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.zero = torch.nn.Linear(8, 8)
            self.const = torch.nn.Linear(8, 8)
            self.head = torch.nn.Linear(8, 4)
            with torch.no_grad():
                for layer in (self.zero, self.const):
                    layer.weight.zero_()
                self.zero.bias.zero_()
                self.const.bias.fill_(0.5)

        def forward(self, x):
            return self.head(torch.relu(self.zero(x)) + self.const(x))

    model = Constant().eval()
    calib = _random_calibration((2, 8))
    compiled = lc.build(model, (calib[0][0],), quantize=lc.QuantConfig(calibration_data=calib))
    for p in compiled.quantization.graph.tensors.values():
        assert np.all(np.isfinite(p.scale)) and np.all(np.asarray(p.scale) > 0)
    x = calib[1][0]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(compiled(x), expected, atol=0.02)
    assert np.array_equal(compiled(x), compiled.quantization.reference(x))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_calibration_data_is_refused(bad):
    calib = _random_calibration((1, 64), n=3)
    calib[1][0][0, 5] = bad
    with pytest.raises(lc.CalibrationError, match=r"sample 1.*'input'.*NaN or Inf"):
        lc.build(lc.zoo.mlp(), (calib[0][0],), quantize=lc.QuantConfig(calibration_data=calib))


def test_empty_calibration_set_is_refused():
    with pytest.raises(lc.CalibrationError, match="empty"):
        lc.build(lc.zoo.mlp(), (np.zeros((1, 64), np.float32),),
                 quantize=lc.QuantConfig(calibration_data=[]))


@pytest.mark.parametrize("sample, match", [
    (np.zeros((1, 32), np.float32), r"input 'input' has shape \(1, 32\).*\(1, 64\)"),
    ((np.zeros((1, 64), np.float32), np.zeros(3)), "2 array"),
    ({"y": np.zeros((1, 64), np.float32)}, "do not match"),
])
def test_calibration_samples_must_match_the_model(sample, match):
    with pytest.raises(lc.CalibrationError, match=match):
        lc.build(lc.zoo.mlp(), (np.zeros((1, 64), np.float32),),
                 quantize=lc.QuantConfig(calibration_data=[sample]))


# --- per-layer analysis ----------------------------------------------------------------------

def test_analysis_reports_every_quantized_layer_worst_first(digits, tmp_path):
    data, model, _, _, calib = digits
    held = [(b,) for b in datasets.batches(data.x_test, BATCH)[:4]]
    report = lc.analyze_quantization(model, (data.x_test[:BATCH],),
                                     quantize=lc.QuantConfig(calibration_data=calib[:4]),
                                     data=held)
    names = [r.layer for r in report.layers]
    assert sorted(names) == ["add_0", "conv2d_0", "conv2d_1", "conv2d_2", "dense_0",
                             "dense_1"]
    sqnr = [r.network_sqnr_db for r in report.layers]
    assert sqnr == sorted(sqnr)
    for r in report.layers:
        assert 10 < r.network_sqnr_db < 80 and 0.99 < r.network_cosine <= 1.0 + 1e-9
    # The first conv sees the quantized graph input in both settings: same error.
    first = next(r for r in report.layers if r.layer == "conv2d_0")
    assert first.network_sqnr_db == pytest.approx(first.isolated_sqnr_db, abs=1e-6)
    assert report.top1_agreement >= 0.98 and report.samples == 4
    assert "conv2d_0" in str(report)
    png = report.plot(tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(report.to_json())["layers"][0]["layer"] == names[0]


def test_analysis_names_the_layer_where_error_starts_compounding(digits):
    data, model, _, _, calib = digits
    held = [(b,) for b in datasets.batches(data.x_test, BATCH)[:2]]
    config = lc.QuantConfig(calibration_data=calib[:4],
                            overrides={"conv2d_1": {"range": (-0.002, 0.002)}})
    report = lc.analyze_quantization(model, (data.x_test[:BATCH],), quantize=config,
                                     data=held)
    assert report.first_drop == "conv2d_1"
    rows = {r.layer: r for r in report.layers}
    assert rows["conv2d_1"].order < rows["conv2d_2"].order
    # Downstream layers are fine alone but inherit the error: the upstream column says so.
    assert rows["dense_0"].upstream_db > 6 and rows["conv2d_0"].upstream_db == pytest.approx(0)
    assert "first drops by more than 6 dB at conv2d_1" in str(report)


# --- remaining error paths -------------------------------------------------------------------

def test_table_files_with_a_wrong_version_or_fields_are_refused(tmp_path):
    from lepton_compiler.optimize.quantization import CalibrationTable

    path = tmp_path / "t.json"
    path.write_text(json.dumps({"version": 99, "tensors": {}}))
    with pytest.raises(lc.QuantizationError, match="not a version-1 calibration table"):
        CalibrationTable.load(path)
    path.write_text(json.dumps({"version": 1, "method": "minmax", "percentile": 99.9,
                                "signature": "x", "tensors": {"a": {"shape": [1]}}}))
    with pytest.raises(lc.QuantizationError, match="malformed calibration table"):
        CalibrationTable.load(path)


def test_override_range_must_be_a_pair():
    config = lc.QuantConfig(calibration_data=[np.zeros((1, 64), np.float32)],
                            overrides={"dense_0": {"range": 3.0}})
    with pytest.raises(lc.OptionError, match=r"must be \(lo, hi\)"):
        lc.build(lc.zoo.mlp(), (np.zeros((1, 64), np.float32),), quantize=config)


def test_non_numeric_calibration_samples_are_refused():
    sample = np.array([["a"] * 64], dtype=object)
    with pytest.raises(lc.CalibrationError, match="dtype object"):
        lc.build(lc.zoo.mlp(), (np.zeros((1, 64), np.float32),),
                 quantize=lc.QuantConfig(calibration_data=[sample]))


def test_float_overflow_inside_the_model_during_calibration_names_the_tensor():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1e30)
        model[1].weight.fill_(1e30)
    x = np.ones((1, 4), np.float32) * 1e10
    with pytest.raises(lc.CalibrationError, match=r"tensor 'dense_\d'.*sample 0.*overflows"):
        lc.build(model, (x,), quantize=lc.QuantConfig(calibration_data=[(x,)]))


def test_nan_weights_cannot_be_quantized():
    with pytest.raises(lc.QuantizationError, match="NaN or Inf"):
        quantize_weights(np.array([[1.0, np.nan]]))


def test_npz_calibration_files_are_checked(tmp_path):
    from lepton_compiler.optimize.quantization import load_samples

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(lc.CalibrationError, match=r"junk\.npz"):
        load_samples(tmp_path / "junk.npz")
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(lc.CalibrationError, match="empty"):
        load_samples(tmp_path / "empty.npz")
    np.savez(tmp_path / "uneven.npz", a=np.zeros((3, 2)), b=np.zeros((4, 2)))
    with pytest.raises(lc.CalibrationError, match="different numbers of samples"):
        load_samples(tmp_path / "uneven.npz")
    np.savez(tmp_path / "ok.npz", a=np.zeros((3, 2)), b=np.ones((3, 5)))
    samples = load_samples(tmp_path / "ok.npz")
    assert len(samples) == 3 and samples[0]["b"].shape == (5,)


def test_analysis_needs_data_to_measure_on(tmp_path):
    model, x = lc.zoo.mlp(), np.zeros((2, 64), np.float32)
    compiled = lc.build(model, (x,), quantize=lc.QuantConfig(calibration_data=[(x + 1,)]))
    table = compiled.quantization.table.save(tmp_path / "t.json")
    with pytest.raises(lc.OptionError, match="needs data="):
        lc.analyze_quantization(model, (x,), quantize=lc.QuantConfig(table=table))
    with pytest.raises(lc.CalibrationError, match="analysis data is empty"):
        lc.analyze_quantization(model, (x,), quantize=lc.QuantConfig(table=table), data=[])


def test_max_drop_keeps_the_fewest_layers_float_that_hold_the_bound(digits):
    data, model, _, _, calib = digits

    def validation(m):
        return datasets.accuracy(m, data.x_test, data.y_test, BATCH)[0]

    # A range far too narrow for conv2d_1's output wrecks that layer (and only that one).
    config = lc.QuantConfig(calibration_data=calib, max_drop=0.005, validation=validation,
                            overrides={"conv2d_1": {"range": (-0.002, 0.002)}})
    compiled = lc.build(model, (data.x_test[:BATCH],), target="lepton", quantize=config)
    control = compiled.quantization.summary()["accuracy"]
    assert control["float_metric"] - control["int8_metric"] > 0.005  # it had to act
    assert control["drop"] <= 0.005 and "conv2d_1" in control["reverted"]
    compute = [n for n in compiled.quantization.summary()["quantized"]
               if n.startswith(("conv2d", "dense", "add"))]
    assert len(control["reverted"]) <= 2 and len(compute) >= 4  # the rest stays int8
    # The artifact built is the plan that was measured.
    assert validation(compiled) == pytest.approx(control["final_metric"])
    assert "accuracy control" in compiled.quantization.summary()["float"]["conv2d_1"]


def test_a_failing_validation_function_is_reported_as_such(digits):
    data, model, _, _, calib = digits

    def broken(m):
        raise KeyError("labels")

    config = lc.QuantConfig(calibration_data=calib[:2], max_drop=0.01, validation=broken)
    with pytest.raises(lc.QuantizationError, match="validation function failed on the float"):
        lc.build(model, (data.x_test[:BATCH],), target="lepton", quantize=config)


def test_bias_correction_removes_the_systematic_error_rounding_leaves():
    # Weights that all round down by 0.45 of a step and inputs that are all positive: the
    # int8 layer is low by a constant in every channel, which bias correction takes off.
    model = torch.nn.Linear(16, 4).eval()
    with torch.no_grad():
        steps = np.arange(16, dtype=np.float32)[None, :] % 7 + 0.45
        steps[:, 0] = 127.0  # the peak fixes the scale at 1/127
        model.weight.copy_(torch.from_numpy(np.repeat(steps, 4, axis=0) / 127.0))
        model.bias.zero_()
    rng = np.random.default_rng(0)
    calib = [(rng.uniform(0.5, 1.0, (8, 16)).astype(np.float32),) for _ in range(4)]
    x = rng.uniform(0.5, 1.0, (8, 16)).astype(np.float32)
    want = model(torch.from_numpy(x)).detach().numpy()
    errors = {}
    for corrected in (False, True):
        config = lc.QuantConfig(calibration_data=calib, bias_correction=corrected)
        compiled = lc.build(model, (x,), target="lepton", quantize=config)
        assert np.array_equal(compiled(x), compiled.quantization.reference(x))
        errors[corrected] = float(np.abs((compiled(x) - want).mean(axis=0)).max())
    assert errors[False] > 0.02 and errors[True] < errors[False] / 4, errors
