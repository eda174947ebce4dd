"""NPU artifacts in the thin runtime: fast and sim modes, and per-kernel profiles."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_runtime
from lepton_compiler.lower.artifact import export_kernel
from lepton_compiler.target.npu_kernels import Conv2dShape, build_conv2d, build_matmul
from lepton_runtime.errors import UnsupportedArtifactError

from .conftest import run_runtime_only


@pytest.fixture(scope="module")
def matmul_artifact(tmp_path_factory):
    kernel = build_matmul(100, 70, 130)
    path = export_kernel(kernel, tmp_path_factory.mktemp("npu") / "matmul.lepton")
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (100, 130), dtype=np.int8)
    b = rng.integers(-128, 128, (130, 70), dtype=np.int8)
    return kernel, path, a, b


def test_modes_give_identical_results(matmul_artifact):
    _, path, a, b = matmul_artifact
    expected = a.astype(np.int32) @ b.astype(np.int32)
    fast = lepton_runtime.load(path, mode="fast").run(a, b)
    sim = lepton_runtime.load(path, mode="sim").run(a, b)
    assert np.array_equal(fast, expected) and np.array_equal(sim, expected)


def test_sim_profile_matches_the_compiler_and_sums(matmul_artifact):
    kernel, path, a, b = matmul_artifact
    session = lepton_runtime.load(path, mode="sim")
    profile = session.profile(a, b)
    assert [k.kernel for k in profile.kernels] == ["matmul"]
    row = profile.kernels[0]
    assert row.cycles == kernel.sim_report(a, b)["cycles"] > 0
    assert profile.total_cycles == sum(k.cycles for k in profile.kernels)
    assert row.macs_useful == 100 * 70 * 130 <= row.macs_issued
    assert row.dram_bytes >= a.nbytes + b.nbytes + 100 * 70 * 4
    assert 0 < row.utilisation <= 1
    assert "matmul" in profile.table()
    assert set(row.sram_bytes) == {"input", "weight", "accumulator"}
    assert row.counters["dma_transfers"] > 0  # operand loads and output stores


def test_fast_profile_times_kernels_without_accounting(matmul_artifact):
    _, path, a, b = matmul_artifact
    profile = lepton_runtime.load(path).profile(a, b)
    assert profile.mode == "fast" and profile.kernels[0].time_ms > 0
    assert profile.total_cycles == 0


def test_sim_mode_needs_npu_kernels(cnn_artifact):
    with pytest.raises(UnsupportedArtifactError, match="sim mode needs NPU kernels"):
        lepton_runtime.load(cnn_artifact, mode="sim")
    with pytest.raises(UnsupportedArtifactError, match="unknown mode 'turbo'"):
        lepton_runtime.load(cnn_artifact, mode="turbo")


def test_npu_conv_artifact_runs_without_the_compiler(tmp_path):
    shape = Conv2dShape(1, 9, 9, 5, 20, 3, 3, (2, 2), (1, 1, 1, 1))
    kernel = build_conv2d(shape)
    path = export_kernel(kernel, tmp_path / "conv.lepton")
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, 9, 9, 5), dtype=np.int8)
    w = rng.integers(-128, 128, (3, 3, 5, 20), dtype=np.int8)
    expected = kernel.run(x, w).reshape(-1, 20)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w.reshape(-1, 20))
    result = run_runtime_only(f"""
        import numpy as np, lepton_runtime
        s = lepton_runtime.load({str(path)!r}, mode="sim")
        y = s.run(np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "w.npy")!r}))
        assert s.profile(np.load({str(tmp_path / "x.npy")!r}),
                         np.load({str(tmp_path / "w.npy")!r})).total_cycles > 0
        np.save({str(tmp_path / "y.npy")!r}, y)
    """)
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), expected)
