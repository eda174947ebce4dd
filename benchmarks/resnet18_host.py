"""ResNet-18 fp32 on the host: Lepton vs PyTorch eager vs onnxruntime, side by side.

    python -m benchmarks.resnet18_host [--threads 2] [--repeats 30]

Batch 1, 224x224, random weights (fixed seed). Every system runs in this one process with
the same thread count; the report gives median/min latency, ratios to onnxruntime, Lepton's
compile time and the output agreement, and is written to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _time(fn, repeats: int) -> dict:
    from lepton_compiler.timing import measure

    t = measure(fn, repeats, warmup=5)
    return {"median_ms": t.median_ms, "min_ms": t.min_ms}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    os.environ["LEPTON_NUM_THREADS"] = str(args.threads)

    import onnxruntime as ort
    import torch

    import lepton_compiler
    from lepton_compiler.examples import zoo

    torch.set_num_threads(args.threads)
    model = zoo.resnet18()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 224, 224))
                         .astype(np.float32))
    xn = x.numpy()

    start = time.perf_counter()
    compiled = lepton_compiler.build(model, (x,), num_threads=args.threads)
    compile_s = time.perf_counter() - start

    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17,
                          input_names=["x"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    with torch.no_grad():
        reference = model(x).numpy()
        results = {
            "lepton": _time(lambda: compiled(xn), args.repeats),
            "torch_eager": _time(lambda: model(x), args.repeats),
            "onnxruntime": _time(lambda: session.run(None, {"x": xn}), args.repeats),
        }
    ort_ms = results["onnxruntime"]["median_ms"]
    for r in results.values():
        r["ratio_to_onnxruntime"] = r["median_ms"] / ort_ms
    err = float(np.abs(compiled(xn) - reference).max() / np.abs(reference).max())
    report = {
        "benchmark": "resnet18_host_fp32",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "mcpu": compiled.manifest["target"]["mcpu"],
        "threads": args.threads,
        "batch": 1,
        "repeats": args.repeats,
        "lepton_compile_s": compile_s,
        "lepton_compile_stages_s": compiled.build_info["timings_s"],
        "lepton_relative_error_vs_torch": err,
        "results": results,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__,
                     "lepton": lepton_compiler.__version__},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"resnet18_host_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"ResNet-18 fp32, batch 1, {args.threads} threads, {report['cpu']}")
    print(f"{'system':<14}{'median ms':>11}{'min ms':>9}{'vs ORT':>8}")
    for name, r in results.items():
        print(f"{name:<14}{r['median_ms']:>11.2f}{r['min_ms']:>9.2f}"
              f"{r['ratio_to_onnxruntime']:>7.2f}x")
    print(f"lepton compile {compile_s:.1f}s, max rel. error vs torch {err:.1e}; wrote {out}")
    return report


if __name__ == "__main__":
    main()
