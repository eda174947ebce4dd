"""The `lepton` console script, exercised as a user would run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from .conftest import to_onnx_bytes

# The script installed next to the interpreter running the tests (its venv), else the PATH one.
LEPTON = shutil.which("lepton", path=os.path.dirname(sys.executable)) or shutil.which("lepton")
pytestmark = pytest.mark.skipif(LEPTON is None, reason="console script not installed")


def lepton(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([LEPTON, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 4)).eval()
    x = torch.randn(3, 16)
    path = tmp_path_factory.mktemp("cli") / "mlp.onnx"
    path.write_bytes(to_onnx_bytes(model, (x,)))
    return model, path


def test_help_for_every_command(capsys):
    from lepton_compiler.cli import main

    result = lepton("--help")  # the installed console script
    assert result.returncode == 0 and "usage: lepton" in result.stdout
    for command in ("compile", "run", "inspect", "check", "quant-report", "demo", "profile",
                    "bench"):
        assert command in result.stdout
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: lepton {command}" in capsys.readouterr().out


def test_compile_run_inspect(onnx_model, tmp_path):
    model, path = onnx_model
    out = tmp_path / "mlp.lepton"
    result = lepton("compile", str(path), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.is_file() and "input  in0: float32[3, 16]" in result.stdout

    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = lepton("run", str(out), "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npy"))
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4, atol=1e-5)

    result = lepton("inspect", str(out), "--kernels")
    assert result.returncode == 0, result.stderr
    assert "format v1" in result.stdout and "kernels:" in result.stdout


def test_errors_are_one_line_without_traceback(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"definitely not protobuf \xff\x00" * 5)
    result = lepton("compile", str(garbage), "-o", str(tmp_path / "g.lepton"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    result = lepton("run", str(tmp_path / "absent.lepton"))
    assert result.returncode == 1 and "no such artifact" in result.stderr

    result = lepton("--verbose", "run", str(tmp_path / "absent.lepton"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_run_rejects_wrong_input_shape(onnx_model, tmp_path):
    _, path = onnx_model
    out = tmp_path / "m.lepton"
    assert lepton("compile", str(path), "-o", str(out)).returncode == 0
    np.save(tmp_path / "bad.npy", np.zeros((5, 16), np.float32))
    result = lepton("run", str(out), "--input", str(tmp_path / "bad.npy"))
    assert result.returncode == 1 and "expected shape [3, 16]" in result.stderr


def test_demo():
    result = lepton("demo")
    assert result.returncode == 0, result.stderr
    assert "demo passed" in result.stdout and "bit-identical" in result.stdout
    assert "fast mode bit-exact, sim mode bit-exact" in result.stdout  # the NPU part


def test_compile_with_input_shape_and_npz_output(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4])
            for n in ("pos", "neg")]
    nodes = [helper.make_node("Relu", ["x"], ["pos"], name="relu"),
             helper.make_node("Neg", ["x"], ["neg"], name="neg")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "dyn.onnx"
    path.write_bytes(model.SerializeToString())
    out = tmp_path / "dyn.lepton"
    result = lepton("compile", str(path), "-o", str(out))
    assert result.returncode == 1 and "--input-shape" in result.stderr
    result = lepton("compile", str(path), "-o", str(out), "--input-shape", "x=2,4")
    assert result.returncode == 0, result.stderr
    data = np.arange(8, dtype=np.float32).reshape(2, 4) - 4
    np.save(tmp_path / "x.npy", data)
    result = lepton("run", str(out), "--input", f"x={tmp_path / 'x.npy'}",
                    "--output", str(tmp_path / "y.npz"))
    assert result.returncode == 0, result.stderr
    got = np.load(tmp_path / "y.npz")
    np.testing.assert_array_equal(got["pos"], np.maximum(data, 0))
    np.testing.assert_array_equal(got["neg"], -data)


def test_compile_for_lepton_reports_fallbacks_and_sim_needs_npu(onnx_model, tmp_path):
    _, path = onnx_model
    out = tmp_path / "l.lepton"
    result = lepton("compile", str(path), "-o", str(out), "--target", "lepton")
    assert result.returncode == 0, result.stderr
    assert "host fallback" in result.stdout and "int8" in result.stdout
    np.save(tmp_path / "x.npy", np.zeros((3, 16), np.float32))
    result = lepton("run", str(out), "--input", str(tmp_path / "x.npy"), "--mode", "sim")
    assert result.returncode == 1 and "sim mode needs NPU kernels" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[matrix]\ntile_q = 1\n")
    result = lepton("compile", str(path), "-o", str(out), "--target", "lepton", "--spec",
                    str(bad))
    assert result.returncode == 1 and "bad.toml" in result.stderr


def test_compile_int8_from_npz_calibration_and_reuse_the_table(onnx_model, tmp_path):
    import lepton_compiler as lc

    _, path = onnx_model
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", rng.standard_normal((8, 3, 16)).astype(np.float32))
    out, table = tmp_path / "q.lepton", tmp_path / "table.json"
    result = lepton("compile", str(path), "-o", str(out), "--target", "lepton", "--quantize",
                    "int8", "--calib", str(tmp_path / "calib.npz"), "--calib-method", "entropy",
                    "--save-calib-table", str(table))
    assert result.returncode == 0, result.stderr
    assert "int8 (entropy calibration)" in result.stdout and "on the NPU" in result.stdout
    assert "cascade dense_0 -> dense_1: 96 B kept in SRAM" in result.stdout  # 3 x 32 int8
    plain = lepton("compile", str(path), "-o", str(tmp_path / "p.lepton"), "--target",
                   "lepton", "--quantize", "int8", "--calib", str(tmp_path / "calib.npz"),
                   "--no-cascade")
    assert plain.returncode == 0 and "cascade" not in plain.stdout, plain.stderr
    x = rng.standard_normal((3, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = lepton("run", str(out), "--input", str(tmp_path / "x.npy"), "--mode", "sim",
                    "--output", str(tmp_path / "y.npy"))
    assert result.returncode == 0, result.stderr
    again = lc.build(str(path), target="lepton", quantize=lc.QuantConfig(table=table))
    assert np.array_equal(np.load(tmp_path / "y.npy"), again(x))
    assert np.array_equal(again(x), again.quantization.reference(x))


def test_quant_report_prints_the_table_and_writes_the_chart(onnx_model, tmp_path):
    _, path = onnx_model
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((6, 3, 16)).astype(np.float32))
    result = lepton("quant-report", str(path), "--calib", str(tmp_path / "calib.npz"),
                    "--png", str(tmp_path / "r.png"), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 1 and "do not match the model's inputs" in result.stderr
    np.savez(tmp_path / "calib.npz", rng.standard_normal((6, 3, 16)).astype(np.float32))
    result = lepton("quant-report", str(path), "--calib", str(tmp_path / "calib.npz"),
                    "--png", str(tmp_path / "r.png"), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert "dense_0" in result.stdout and "dense_1" in result.stdout and "SQNR" in result.stdout
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "r.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--calib", "c.npz"], "needs --quantize int8"),
    (["--quantize", "int8"], "needs calibration data"),
    (["--quantize", "int8", "--calib", "missing.npz"], "calibration data not found"),
])
def test_quantization_option_errors(onnx_model, tmp_path, extra, message):
    _, path = onnx_model
    args = [a if not a.endswith(".npz") else str(tmp_path / a) for a in extra]
    result = lepton("compile", str(path), "-o", str(tmp_path / "o.lepton"), *args)
    assert result.returncode == 1 and message in result.stderr, result.stderr
