"""The NPU emulation's GEMM path comes from the target CPU's features, never its name: cross
builds pick the expected path, this machine's build matches its /proc/cpuinfo flags, the
artifact records the path, and a compiler that cannot build it degrades with a warning."""

from __future__ import annotations

import logging
import os
import stat

import numpy as np
import pytest

import lepton_compiler as lc
from lepton_compiler.target.host import resolve_host
from lepton_compiler.target.npu_codegen import GEMM_PATHS, best_gemm_path, npu_object
from lepton_compiler.target.spec import load_spec


@pytest.mark.parametrize("cpu, path", [
    ("x86-64-v2", "portable"),
    ("haswell", "avx2"),
    ("skylake-avx512", "avx512"),
    ("icelake-server", "avx512-vnni"),
    ("znver4", "avx512-vnni"),
    ("sapphirerapids", "avx512-vnni"),
])
def test_cross_builds_pick_the_path_their_cpu_features_allow(cpu, path):
    assert best_gemm_path(resolve_host(cpu)) == path


def _proc_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs /proc/cpuinfo")
def test_this_machines_path_matches_its_cpu_flags():
    flags = _proc_flags()
    avx512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"} <= flags
    expected = ("avx512-vnni" if avx512 and "avx512_vnni" in flags else "avx512" if avx512
                else "avx2" if {"avx2", "fma"} <= flags else "portable")
    assert best_gemm_path(resolve_host()) == expected


def test_the_artifact_records_its_gemm_path_and_inspect_shows_it(tmp_path, capsys):
    from lepton_compiler.cli import main

    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal((4, 64)).astype(np.float32),) for _ in range(2)]
    compiled = lc.build(lc.zoo.mlp(), calib[0], target="lepton",
                        quantize=lc.QuantConfig(calibration_data=calib))
    path = compiled.export(tmp_path / "mlp.lepton")
    import lepton_runtime

    target = lepton_runtime.inspect(path)["manifest"]["target"]
    assert target["gemm_path"] == best_gemm_path(resolve_host())
    assert main(["inspect", str(path)]) == 0
    assert f"NPU emulation GEMM path: {target['gemm_path']}" in capsys.readouterr().out


def test_a_compiler_without_the_fast_path_degrades_loudly(tmp_path, monkeypatch, caplog):
    # A "cc" that refuses the VNNI flag, as a compiler older than the CPU would.
    import shutil

    real = shutil.which("cc")
    assert real, "the build needs a C compiler named cc"
    fake = tmp_path / "bin" / "cc"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = "-mavx512vnni" ] && '
                    '{ echo "cc: error: unrecognized option -mavx512vnni" >&2; exit 1; }; '
                    f'done\nexec {real} "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    with caplog.at_level(logging.WARNING):
        _, path = npu_object(load_spec(None), tmp_path, resolve_host("icelake-server"))
    assert path == "avx512"
    assert "cannot build the avx512-vnni GEMM path" in caplog.text
    names = [name for name, _, _ in GEMM_PATHS]
    assert names == ["avx512-vnni", "avx512", "avx2", "portable"]
