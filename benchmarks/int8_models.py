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


def bench_model(name: str, threads: int, repeats: int, calib_n: int = 4) -> dict:
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
    with tempfile.TemporaryDirectory() as tmp:
        from lepton_compiler.examples.bench.systems import (
            Case,
            Context,
            onnxruntime_fp32,
            onnxruntime_int8,
        )

        workdir = Path(tmp)
        case = Case(name, model, (x,), [(c,) for c in calib], name)
        ctx = Context(threads, workdir, quick=False)
        ort_int8, ort_fp32 = onnxruntime_int8(case, ctx), onnxruntime_fp32(case, ctx)
        torch.set_num_threads(threads)
        with torch.no_grad():
            reference = model(torch.from_numpy(x)).numpy()
            row["torch_fp32_ms"] = _median_ms(lambda: model(torch.from_numpy(x)), repeats)
        row["lepton_int8_fast_ms"] = _median_ms(lambda: compiled(x), repeats)
        row["onnxruntime_int8_ms"] = _median_ms(ort_int8.run, repeats)
        row["onnxruntime_fp32_ms"] = _median_ms(ort_fp32.run, repeats)
        ours = compiled(x)
        theirs = ort_int8.run()[0]
        for key, out in (("lepton", ours), ("onnxruntime", theirs)):
            row[f"{key}_cosine_vs_fp32"] = float(
                out.ravel() @ reference.ravel()
                / (np.linalg.norm(out) * np.linalg.norm(reference)))
        path = compiled.export(workdir / f"{name}.lepton")
        import lepton_runtime

        profile = lepton_runtime.load(path, mode="sim").profile(x)
        row["sim_cycles"] = profile.total_cycles
        row["sim_npu_macs"] = sum(k.macs_useful for k in profile.kernels)
        row["sim_mac_utilisation"] = profile.utilisation
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
