"""ResNet-18 and MobileNetV2 int8 on the Lepton target (fast mode) vs onnxruntime int8 and
PyTorch eager fp32, side by side in one run; simulated NPU cycles per model.

    python -m benchmarks.int8_models [--threads 2] [--repeats 20] [--models resnet18,mobilenet_v2]

onnxruntime int8 is static post-training quantization (QDQ format, per-channel weights,
QInt8 activations and weights) calibrated on the same samples as Lepton's. Random weights
(fixed seed), batch 1, 224x224; the ratio column is onnxruntime-int8 time / system time
(higher is better). Results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _median_ms(fn, repeats: int) -> float:
    from lepton_compiler.timing import measure

    return measure(fn, repeats).median_ms


def _ort_int8(onnx_bytes: bytes, calib: list[np.ndarray], threads: int, workdir: Path):
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    src, dst = workdir / "fp32.onnx", workdir / "int8.onnx"
    src.write_bytes(onnx_bytes)
    name = ort.InferenceSession(str(src)).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: x} for x in calib])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"]), name


def bench_model(name: str, threads: int, repeats: int, calib_n: int = 4) -> dict:
    import onnxruntime as ort
    import torch

    import lepton_compiler as lc

    model = getattr(lc.zoo, name)()
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(calib_n)]
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    start = time.perf_counter()
    compiled = lc.build(model, (x,), target="lepton",
                        quantize=lc.QuantConfig(calibration_data=[(c,) for c in calib]))
    compile_s = time.perf_counter() - start
    row: dict = {"model": name, "compile_s": compile_s,
                 "npu_mac_share": compiled.report.npu_mac_share,
                 "kernels": compiled.build_info["calls"]}
    from lepton_compiler.placement import PlacementReport  # noqa: F401  (report in row)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        from tests.conftest import to_onnx_bytes

        onnx_bytes = to_onnx_bytes(model, (torch.from_numpy(x),))
        ort_int8, in_name = _ort_int8(onnx_bytes, calib, threads, workdir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        ort_fp32 = ort.InferenceSession(onnx_bytes, options,
                                        providers=["CPUExecutionProvider"])
        torch.set_num_threads(threads)
        with torch.no_grad():
            reference = model(torch.from_numpy(x)).numpy()
            row["torch_fp32_ms"] = _median_ms(lambda: model(torch.from_numpy(x)), repeats)
        row["lepton_int8_fast_ms"] = _median_ms(lambda: compiled(x), repeats)
        row["onnxruntime_int8_ms"] = _median_ms(
            lambda: ort_int8.run(None, {in_name: x}), repeats)
        row["onnxruntime_fp32_ms"] = _median_ms(
            lambda: ort_fp32.run(None, {in_name: x}), repeats)
        ours = compiled(x)
        theirs = ort_int8.run(None, {in_name: x})[0]
        for key, out in (("lepton", ours), ("onnxruntime", theirs)):
            row[f"{key}_cosine_vs_fp32"] = float(
                out.ravel() @ reference.ravel()
                / (np.linalg.norm(out) * np.linalg.norm(reference)))
        path = compiled.export(workdir / f"{name}.lepton")
        import lepton_runtime

        profile = lepton_runtime.load(path, mode="sim").profile(x)
        row["sim_cycles"] = profile.total_cycles
        macs = sum(k.macs_useful for k in profile.kernels)
        peak = compiled.manifest["target"].get("peak_macs_per_cycle") or 256
        row["sim_npu_macs"] = macs
        row["sim_mac_utilisation"] = macs / (profile.total_cycles * peak) \
            if profile.total_cycles else 0.0
    row["ratio_to_onnxruntime_int8"] = row["onnxruntime_int8_ms"] / row["lepton_int8_fast_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    args = parser.parse_args()
    os.environ.setdefault("LEPTON_NUM_THREADS", str(args.threads))
    rows = [bench_model(m, args.threads, args.repeats) for m in args.models.split(",")]
    print("| model | Lepton int8 (fast) ms | onnxruntime int8 ms | vs ort int8 | "
          "onnxruntime fp32 ms | torch fp32 ms | sim cycles | sim MAC util |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['lepton_int8_fast_ms']:.2f} | {r['onnxruntime_int8_ms']:.2f} "
              f"| {r['ratio_to_onnxruntime_int8']:.2f}x | {r['onnxruntime_fp32_ms']:.2f} | "
              f"{r['torch_fp32_ms']:.2f} | {r['sim_cycles']} | {r['sim_mac_utilisation']:.1%} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"int8_models_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps({"benchmark": "int8_models", "threads": args.threads,
                               "date": dt.datetime.now(dt.timezone.utc).isoformat(),
                               "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
