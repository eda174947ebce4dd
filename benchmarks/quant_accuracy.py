"""int8 accuracy of the digits CNN for every calibration method, and its per-layer report.

    python -m benchmarks.quant_accuracy [--calib-batches 12]

Trains :func:`lepton_compiler.examples.zoo.digits_cnn` on scikit-learn's bundled digits
(70/30 split,
seed 0), then builds it int8 for the Lepton target (fast mode) with each calibration method,
per-channel and per-tensor weights, and measures held-out top-1 accuracy and agreement with
float. The per-layer SQNR report (min-max, per-channel, measured on the held-out digits) and
a PNG chart go to benchmarks/results/ with the JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib-batches", type=int, default=12,
                        help="calibration batches of 30 training digits (default 12)")
    args = parser.parse_args()

    import numpy as np
    import torch

    import lepton_compiler as lc
    from lepton_compiler.examples import datasets

    data = datasets.load_digits()
    model = datasets.train_digits_cnn(data)

    def predict(batch):
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()

    float_acc, float_preds = datasets.accuracy(predict, data.x_test, data.y_test, BATCH)
    calib = [(b,) for b in datasets.batches(data.x_train, BATCH)[:args.calib_batches]]
    example = (data.x_test[:BATCH],)
    rows = []
    print(f"float accuracy {float_acc:.2%} on {len(float_preds)} held-out digits")
    print("| method | weights | int8 accuracy | Δ vs float | top-1 agreement | build s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for method in ("minmax", "percentile", "entropy", "mse"):
        for per_channel in (True, False):
            start = time.perf_counter()
            compiled = lc.build(model, example, target="lepton", quantize=lc.QuantConfig(
                calibration_data=calib, method=method, per_channel=per_channel))
            build_s = time.perf_counter() - start
            acc, preds = datasets.accuracy(compiled, data.x_test, data.y_test, BATCH)
            agree = float((preds == float_preds).mean())
            weights = "per-channel" if per_channel else "per-tensor"
            rows.append({"method": method, "weights": weights, "int8_accuracy": acc,
                         "agreement": agree, "build_s": build_s})
            print(f"| {method} | {weights} | {acc:.2%} | {100 * (acc - float_acc):+.2f} pp | "
                  f"{agree:.2%} | {build_s:.1f} |")
    held = [(b,) for b in datasets.batches(data.x_test, BATCH)]
    report = lc.analyze_quantization(model, example,
                                     quantize=lc.QuantConfig(calibration_data=calib),
                                     data=held)
    print()
    print(report.table())
    RESULTS.mkdir(exist_ok=True)
    png = report.plot(RESULTS / "quant_digits_layers.png")
    out = RESULTS / "quant_accuracy.json"
    out.write_text(json.dumps({
        "date": dt.date.today().isoformat(), "float_accuracy": float_acc,
        "test_samples": len(float_preds), "calibration_samples": len(calib) * BATCH,
        "methods": rows, "layer_report": json.loads(report.to_json()),
        "seed": 0, "numpy": np.__version__}, indent=1))
    print(f"\nwrote {out} and {png}")


if __name__ == "__main__":
    main()
