"""MobileNetV2 fp32 on the host target: Lepton's host schedules vs MetaSchedule-tuned ones.

    python -m benchmarks.host_tuning [--trials 400] [--work-dir DIR]

Tunes every host kernel with TVM's MetaSchedule (CPU rules, in-process builder, Lepton's
worker runner, random cost model), then builds the model with and without the records and
times both side by side (alternating runs), checking both against PyTorch. Reports the
tuning wall time and the time per 1000 trials. Results go to benchmarks/results/.
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
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    os.environ.setdefault("LEPTON_NUM_THREADS", str(args.threads))

    import torch

    import lepton_compiler as lc
    import lepton_runtime
    from lepton_compiler.examples.bench.runner import machine_info
    from lepton_compiler.timing import measure_alternating

    model = getattr(lc.zoo, args.model)()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    work = args.work_dir or tempfile.mkdtemp(prefix="lepton-host-tune-")
    session = lc.tune(model, (x,), target="host", work_dir=work, trials=args.trials, seed=0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, db in (("lepton_schedules", None), ("metaschedule", work)):
            compiled = lc.build(model, (x,), target="host", tuning_db=db)
            compiled.export(Path(tmp) / f"{name}.lepton")
            out = compiled(x)
            rows[name] = {"tuned_kernels": len(compiled.build_info.get("tuned_kernels", {})),
                          "kernels": compiled.build_info["kernels"],
                          "max_abs_err": float(np.max(np.abs(out - expected)))}
        sessions = {n: lepton_runtime.load(Path(tmp) / f"{n}.lepton") for n in rows}
        timings = measure_alternating({n: (lambda s=s: s.run(x)) for n, s in sessions.items()},
                                      args.repeats)
    for name, t in timings.items():
        rows[name].update(median_ms=t.median_ms, min_ms=t.min_ms)
    trials = session.host_trials_run
    result = {
        "benchmark": "host_tuning", "model": args.model,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "machine": machine_info(args.threads), "trials_budget": args.trials,
        "measurements": trials, "tuning_seconds": session.seconds,
        "seconds_per_1000_trials": session.seconds / trials * 1000 if trials else None,
        "rows": rows,
        "speedup_median": rows["lepton_schedules"]["median_ms"] / rows["metaschedule"]["median_ms"],
        "summary": session.summary(),
    }
    print(session.summary())
    print(f"tuning: {trials} measurements in {session.seconds:.0f}s")
    for name, r in rows.items():
        print(f"  {name:<17} median {r['median_ms']:.2f} ms (min {r['min_ms']:.2f})  "
              f"tuned kernels {r['tuned_kernels']}/{r['kernels']}  max |err| vs torch "
              f"{r['max_abs_err']:.2e}")
    print(f"  speed-up: {result['speedup_median']:.2f}x")
    write_result(f"host_tuning_{args.model}", result)
    return result


if __name__ == "__main__":
    main()
