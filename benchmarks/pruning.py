"""ResNet-18 int8 on the Lepton target, unpruned vs pruned 50%, side by side in one run.

    python -m benchmarks.pruning [--threads 2] [--repeats 20] [--ratio 0.5]

Both builds are quantized with the same calibration samples; figures: MACs and parameters
(from the pruning report), NPU sim cycles of one run, fast-mode median/min latency, and the
speed-ups. Batch 1, 224x224, random weights (fixed seed). Results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import write_result


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ratio", type=float, default=0.5)
    args = parser.parse_args()
    os.environ.setdefault("LEPTON_NUM_THREADS", str(args.threads))

    import lepton_compiler as lc
    import lepton_runtime
    from lepton_compiler.examples.bench.runner import machine_info
    from lepton_compiler.timing import measure_alternating

    model = lc.zoo.resnet18()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    calib = [(rng.standard_normal(x.shape).astype(np.float32),) for _ in range(4)]
    config = lc.QuantConfig(calibration_data=calib)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, prune in (("unpruned", None), ("pruned", lc.PruneConfig(ratio=args.ratio))):
            compiled = lc.build(model, (x,), target="lepton", quantize=config, prune=prune,
                                num_threads=args.threads)
            path = compiled.export(Path(tmp) / f"{name}.lepton")
            cycles = lepton_runtime.load(path, mode="sim").profile(x).total_cycles
            rows[name] = {"sim_cycles": cycles, "build_info": {
                k: compiled.build_info.get(k) for k in ("kernels", "calls", "timings_s")},
                "pruning": compiled.build_info.get("pruning")}
        # Time both in the same stretch, alternating, so machine noise hits both alike.
        sessions = {n: lepton_runtime.load(Path(tmp) / f"{n}.lepton") for n in rows}
        timings = measure_alternating({n: (lambda s=s: s.run(x)) for n, s in sessions.items()},
                                      args.repeats)
        for name, t in timings.items():
            rows[name].update(median_ms=t.median_ms, min_ms=t.min_ms)
    pruning = rows["pruned"]["pruning"]
    result = {
        "benchmark": "pruning", "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "machine": machine_info(args.threads), "ratio": args.ratio, "rows": rows,
        "macs_before": pruning["macs_before"], "macs_after": pruning["macs_after"],
        "params_before": pruning["params_before"], "params_after": pruning["params_after"],
        "sim_speedup": rows["unpruned"]["sim_cycles"] / rows["pruned"]["sim_cycles"],
        "fast_speedup_median": rows["unpruned"]["median_ms"] / rows["pruned"]["median_ms"],
        "fast_speedup_min": rows["unpruned"]["min_ms"] / rows["pruned"]["min_ms"],
    }
    print(f"ResNet-18 int8, lepton target, prune ratio {args.ratio}")
    print(f"  MACs {result['macs_before'] / 1e9:.2f} G -> {result['macs_after'] / 1e9:.2f} G, "
          f"params {result['params_before'] / 1e6:.1f} M -> {result['params_after'] / 1e6:.1f} M")
    for name, r in rows.items():
        print(f"  {name:<9} sim {r['sim_cycles']:>11,} cycles   fast median {r['median_ms']:.2f} "
              f"ms (min {r['min_ms']:.2f})")
    print(f"  speed-up: sim {result['sim_speedup']:.2f}x, fast "
          f"{result['fast_speedup_median']:.2f}x (min {result['fast_speedup_min']:.2f}x)")
    write_result("pruning", result)
    return result


if __name__ == "__main__":
    main()
