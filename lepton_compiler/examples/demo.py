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
    import torch

    import lepton_runtime
    from lepton_compiler import build
    from lepton_compiler.examples import zoo
    from lepton_compiler.timing import measure

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
class QuantDemoResult:
    """What the int8 NPU part of the demo measured."""

    float_accuracy: float
    int8_accuracy: float
    agreement: float
    fast_exact: bool
    sim_exact: bool
    npu_kernels: int
    cycles: int
    macs: int
    compile_s: float
    train_s: float

    @property
    def ok(self) -> bool:
        return (self.fast_exact and self.sim_exact and self.agreement >= 0.98
                and self.int8_accuracy >= self.float_accuracy - 0.01)


def run_quantized_demo(batch: int = 30, seed: int = 0) -> QuantDemoResult:
    """Train the digits CNN, quantize it to int8 for the Lepton NPU, and check it: held-out
    accuracy vs float, fast and sim modes bit-exact vs the numpy integer reference, and the
    simulated cycles of one batch."""
    import torch

    import lepton_runtime
    from lepton_compiler import build
    from lepton_compiler.examples import datasets
    from lepton_compiler.optimize.quantization import QuantConfig

    start = time.perf_counter()
    data = datasets.load_digits(seed=seed)
    model = datasets.train_digits_cnn(data, seed=seed)
    train_s = time.perf_counter() - start

    def predict(b: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(b)).numpy()

    float_acc, float_preds = datasets.accuracy(predict, data.x_test, data.y_test, batch)
    calib = [(b,) for b in datasets.batches(data.x_train, batch)[:12]]
    start = time.perf_counter()
    compiled = build(model, (data.x_test[:batch],), target="lepton",
                     quantize=QuantConfig(calibration_data=calib))
    compile_s = time.perf_counter() - start
    int8_acc, preds = datasets.accuracy(compiled, data.x_test, data.y_test, batch)
    x = data.x_test[:batch]
    expected = compiled.quantization.reference(x)
    with tempfile.TemporaryDirectory() as tmp:
        path = compiled.export(Path(tmp) / "digits-int8.lepton")
        sim = lepton_runtime.load(path, mode="sim")
        sim_exact = bool(np.array_equal(sim.run(x), expected))
        profile = sim.profile(x)
    return QuantDemoResult(
        float_acc, int8_acc, float((preds == float_preds).mean()),
        bool(np.array_equal(compiled(x), expected)), sim_exact,
        len(compiled.build_info["npu_kernels"]), profile.total_cycles,
        sum(k.macs_useful for k in profile.kernels), compile_s, train_s)
