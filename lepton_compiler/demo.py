"""``lepton demo``: compile the bundled model, run it, check it against its reference."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DemoResult:
    """What the demo measured."""

    max_abs_error: float
    relative_error: float
    artifact_matches: bool
    compile_s: float
    latency_ms: float
    reference_ms: float
    top1: list[int]
    artifact_bytes: int
    kernels: int

    @property
    def ok(self) -> bool:
        return self.relative_error <= 1e-4 and self.artifact_matches


def run_demo(batch: int = 4, seed: int = 0, repeats: int = 20) -> DemoResult:
    """Compile the bundled CNN for the host, run it, and compare with PyTorch eager."""
    import lepton_runtime
    import torch

    from . import build, zoo
    from .timing import measure

    model = zoo.small_cnn(seed=seed)
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((batch, 3, 16, 16))
                         .astype(np.float32))
    start = time.perf_counter()
    compiled = build(model, (x,))
    compile_s = time.perf_counter() - start
    with torch.no_grad():
        reference = model(x).numpy()
    y = compiled(x)
    err = float(np.abs(y - reference).max())
    scale = float(np.abs(reference).max()) or 1.0
    with tempfile.TemporaryDirectory() as tmp:
        path = compiled.export(Path(tmp) / "demo.lepton")
        size = path.stat().st_size
        session = lepton_runtime.load(path)
        same = bool(np.array_equal(session.run(x.numpy()), y))
    xn = x.numpy()
    latency = measure(lambda: compiled(xn), repeats).median_ms
    with torch.no_grad():
        ref_ms = measure(lambda: model(x), repeats).median_ms
    return DemoResult(err, err / scale, same, compile_s, latency, ref_ms,
                      [int(i) for i in y.argmax(axis=1)], size, compiled.build_info["kernels"])


@dataclass
class NpuDemoResult:
    """What the NPU part of the demo measured."""

    layer: str
    fast_exact: bool
    sim_exact: bool
    cycles: int
    utilisation: float
    dram_bytes: int

    @property
    def ok(self) -> bool:
        return self.fast_exact and self.sim_exact


def run_npu_demo(seed: int = 0) -> NpuDemoResult:
    """An int8 3x3 conv layer on the Lepton NPU in fast and sim modes vs the integer reference."""
    from .target.npu_kernels import Conv2dShape, build_conv2d
    from .target.npu_schedule import sim_report
    from .target.reference import gemm

    shape = Conv2dShape(1, 16, 16, 24, 40, 3, 3, (1, 1), (1, 1, 1, 1))
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, 16, 16, 24), dtype=np.int8)
    w = rng.integers(-128, 128, (3, 3, 24, 40), dtype=np.int8)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.stack([padded[:, i:i + 16, j:j + 16, :] for i in range(3) for j in range(3)],
                       axis=3).reshape(256, -1)
    expected = gemm(windows, w.reshape(-1, 40)).reshape(1, 16, 16, 40)
    kernel = build_conv2d(shape)
    fast = kernel.run(x, w, "fast")
    kernel.counters(reset=True)
    sim = kernel.run(x, w, "sim")
    report = sim_report(kernel.plan, kernel.spec, kernel.counters(reset=True))
    return NpuDemoResult("int8 conv2d 3x3, 16x16x24 -> 40", bool(np.array_equal(fast, expected)),
                         bool(np.array_equal(sim, expected)), int(report["cycles"]),
                         float(report["utilisation"]), int(report["dram_bytes"]))
