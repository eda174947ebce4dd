"""ResNet-18 int8 on the Lepton target: untuned vs tuned (sim runner), side by side.

    python -m benchmarks.tuning [--trials 300] [--work-dir benchmarks/results/tune_resnet18]

Tunes the NPU schedules of every distinct GEMM workload with the deterministic sim runner
(``--trials`` measurements, seed 0), then builds the model with and without the records and
reports NPU sim cycles of one run, fast-mode latency (alternating runs), the tuning wall time
and the time per 1000 trials. Results go to benchmarks/results/.
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
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    os.environ.setdefault("LEPTON_NUM_THREADS", str(args.threads))

    import lepton_compiler as lc
    import lepton_runtime
    from lepton_compiler.examples.bench.runner import machine_info
    from lepton_compiler.timing import measure_alternating

    model = lc.zoo.resnet18()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    config = lc.QuantConfig(calibration_data=[(rng.standard_normal(x.shape)
                                               .astype(np.float32),) for _ in range(4)])
    work = args.work_dir or tempfile.mkdtemp(prefix="lepton-tune-")
    session = lc.tune(model, (x,), quantize=config, work_dir=work, trials=args.trials, seed=0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, db in (("untuned", None), ("tuned", work)):
            compiled = lc.build(model, (x,), target="lepton", quantize=config, tuning_db=db)
            path = compiled.export(Path(tmp) / f"{name}.lepton")
            rows[name] = {"sim_cycles": lepton_runtime.load(path, mode="sim").profile(x)
                          .total_cycles,
                          "tuned_kernels": len(compiled.build_info.get("tuned_kernels", {})),
                          "exact": bool(np.array_equal(compiled(x),
                                                       compiled.quantization.reference(x)))}
        sessions = {n: lepton_runtime.load(Path(tmp) / f"{n}.lepton") for n in rows}
        timings = measure_alternating({n: (lambda s=s: s.run(x)) for n, s in sessions.items()},
                                      args.repeats)
    for name, t in timings.items():
        rows[name].update(median_ms=t.median_ms, min_ms=t.min_ms)
    result = {
        "benchmark": "tuning", "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "machine": machine_info(args.threads), "trials_budget": args.trials,
        "trials_run": session.trials_run, "tuning_seconds": session.seconds,
        "seconds_per_1000_trials": session.seconds / session.trials_run * 1000
        if session.trials_run else None,
        "stopped": session.stopped, "tasks": len(session.tasks),
        "space": sum(len(t.candidates) for t in session.tasks), "rows": rows,
        "sim_speedup": rows["untuned"]["sim_cycles"] / rows["tuned"]["sim_cycles"],
        "fast_speedup_median": rows["untuned"]["median_ms"] / rows["tuned"]["median_ms"],
        "summary": session.summary(),
    }
    print(session.summary())
    print(f"tuning: {session.trials_run} trials over {result['tasks']} tasks (space "
          f"{result['space']}) in {session.seconds:.0f}s ({session.stopped})")
    for name, r in rows.items():
        print(f"  {name:<8} sim {r['sim_cycles']:>11,} cycles  fast median {r['median_ms']:.2f} ms "
              f"(min {r['min_ms']:.2f})  bit-exact {r['exact']}")
    print(f"  speed-up: sim {result['sim_speedup']:.3f}x, fast "
          f"{result['fast_speedup_median']:.2f}x")
    write_result("tuning", result)
    return result


if __name__ == "__main__":
    main()
