"""Shared fixtures: reference models, ONNX export, and a runtime-only subprocess helper."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from lepton_compiler.examples import zoo

# CI (CI=true) replays the same examples every run, so a landing never hinges on a random
# draw; local runs keep exploring, and what they find is pinned with @example.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]

# Blocks `import tvm`, `import torch`, `import onnx` in a child process, so a test proves the
# runtime needs none of them.
BLOCK_IMPORTS = textwrap.dedent(
    """
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tvm", "torch", "onnx", "onnxruntime", "lepton_compiler"):
                raise ImportError(f"{name} is blocked in this runtime-only process")
            return None
    sys.meta_path.insert(0, _Block())
    """
)


def run_runtime_only(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python where tvm, torch and onnx cannot be imported."""
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-c", BLOCK_IMPORTS + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - e| relative to the output scale max |e|."""
    scale = float(np.abs(expected).max()) or 1.0
    return float(np.abs(actual - expected).max()) / scale


def to_onnx_bytes(model: torch.nn.Module, example: tuple) -> bytes:
    """Export a torch module to ONNX bytes (the benchmarks' exporter)."""
    from lepton_compiler.examples.bench.systems import export_onnx

    return export_onnx(model, example)


MODELS = {
    "mlp": (lambda: zoo.mlp(in_features=64, hidden=128, out_features=10, depth=3),
            lambda g: (torch.from_numpy(g.standard_normal((8, 64)).astype(np.float32)),)),
    "cnn": (lambda: zoo.small_cnn(),
            lambda g: (torch.from_numpy(g.standard_normal((2, 3, 16, 16)).astype(np.float32)),)),
    "transformer": (lambda: zoo.transformer_block(dim=64, heads=4, ff=128),
                    lambda g: (torch.from_numpy(
                        g.standard_normal((2, 16, 64)).astype(np.float32)),)),
}


@pytest.fixture(scope="session")
def cnn_compiled():
    """The small CNN compiled for the host, with its example input (shared, built once)."""
    import lepton_compiler

    model = zoo.small_cnn()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 16, 16))
                         .astype(np.float32))
    return model, x, lepton_compiler.build(model, (x,))


@pytest.fixture()
def cnn_artifact(cnn_compiled, tmp_path) -> Path:
    """A fresh copy of the CNN artifact on disk."""
    return cnn_compiled[2].export(tmp_path / "cnn.lepton")
