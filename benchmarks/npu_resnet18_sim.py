"""Sim cycles and utilisation per ResNet-18 conv layer on the Lepton NPU, vs the roofline.

    python -m benchmarks.npu_resnet18_sim

Each distinct conv layer (batch 1, 224x224 input, int8) is compiled as a stand-alone NPU
kernel and run once in sim mode. Roofline = max(useful MACs / peak MACs per cycle, minimal
DRAM bytes / DMA bytes per cycle) where the minimal bytes are input + weights + int32 output;
efficiency = roofline / simulated cycles. Results go to benchmarks/results/.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

# (name, h=w, cin, cout, k, stride, pad, count in the network)
LAYERS = [
    ("conv1", 224, 3, 64, 7, 2, 3, 1),
    ("layer1.3x3", 56, 64, 64, 3, 1, 1, 4),
    ("layer2.0.3x3s2", 56, 64, 128, 3, 2, 1, 1),
    ("layer2.3x3", 28, 128, 128, 3, 1, 1, 3),
    ("layer2.down", 56, 64, 128, 1, 2, 0, 1),
    ("layer3.0.3x3s2", 28, 128, 256, 3, 2, 1, 1),
    ("layer3.3x3", 14, 256, 256, 3, 1, 1, 3),
    ("layer3.down", 28, 128, 256, 1, 2, 0, 1),
    ("layer4.0.3x3s2", 14, 256, 512, 3, 2, 1, 1),
    ("layer4.3x3", 7, 512, 512, 3, 1, 1, 3),
    ("layer4.down", 14, 256, 512, 1, 2, 0, 1),
]


def main() -> dict:
    from lepton_compiler.target.npu_kernels import Conv2dShape, build_conv2d
    from lepton_compiler.target.npu_schedule import sim_report
    from lepton_compiler.target.spec import load_spec

    spec = load_spec()
    rows = []
    for name, hw, cin, cout, k, stride, pad, count in LAYERS:
        shape = Conv2dShape(1, hw, hw, cin, cout, k, k, (stride, stride), (pad,) * 4)
        kernel = build_conv2d(shape)
        rng = np.random.default_rng(0)
        x = rng.integers(-128, 128, (1, hw, hw, cin), dtype=np.int8)
        w = rng.integers(-128, 128, (k, k, cin, cout), dtype=np.int8)
        kernel.counters(reset=True)
        out = kernel.run(x, w, "sim")
        report = sim_report(kernel.plan, spec, kernel.counters(reset=True))
        macs = shape.gemm[0] * shape.gemm[1] * shape.gemm[2]
        minimal_bytes = x.nbytes + w.nbytes + out.nbytes
        roofline = max(macs / spec.matrix.macs_per_cycle, minimal_bytes / spec.dma.bytes_per_cycle)
        rows.append({
            "layer": name, "count": count, "shape": [hw, cin, cout, k, stride],
            "macs": macs, "cycles": report["cycles"], "roofline_cycles": roofline,
            "roofline_efficiency": roofline / report["cycles"],
            "mac_utilisation": macs / (report["cycles"] * spec.matrix.macs_per_cycle),
            "dram_bytes": report["dram_bytes"], "minimal_dram_bytes": minimal_bytes,
        })
    total_cycles = sum(r["cycles"] * r["count"] for r in rows)
    report = {
        "benchmark": "npu_resnet18_sim", "spec": spec.name, "spec_fingerprint": spec.fingerprint(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rows": rows, "conv_cycles_total": total_cycles,
        "conv_ms_at_clock": total_cycles / spec.machine.clock_hz * 1e3,
    }
    RESULTS.mkdir(exist_ok=True)
    out_path = RESULTS / f"npu_resnet18_sim_{dt.date.today().isoformat()}.json"
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'layer':<16}{'cycles':>10}{'roofline':>10}{'eff.':>7}{'MAC util':>9}")
    for r in rows:
        print(f"{r['layer']:<16}{r['cycles']:>10.0f}{r['roofline_cycles']:>10.0f}"
              f"{r['roofline_efficiency']:>7.0%}{r['mac_utilisation']:>9.0%}")
    print(f"all conv layers: {total_cycles:.0f} cycles = {report['conv_ms_at_clock']:.2f} ms at "
          f"{spec.machine.clock_hz / 1e9:.0f} GHz; wrote {out_path}")
    return report


if __name__ == "__main__":
    main()
