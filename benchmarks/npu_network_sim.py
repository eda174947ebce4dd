"""Whole networks on the simulated Lepton NPU: MAC share, cycles (NPU and host fallbacks),
DRAM bytes and the roofline, with and without the vector unit's layers.

    python -m benchmarks.npu_network_sim [--models mobilenet_v2,efficientnet_lite,...]

Each model (random weights, fixed seeds; see ``lepton_compiler.examples.bench.runner``) is
built int8 for the Lepton target twice in one run: as the compiler places it (with cascading),
and without cascading and with the
vector-unit layers (depthwise/grouped conv, pooling, means, adds, clamps, transposes) kept on
the host and softmax, layer norm and GELU in float, as before the vector unit ran them ("host
vector layers"). One sim-mode profile of each
gives the NPU kernels' cycles and DRAM bytes and the host kernels' stated cost (the spec's
``[host_fallback]``: hand-off cycles + MACs and bytes at the host's rate). The roofline is the
sum over NPU kernels of max(useful MACs / peak, minimal DRAM bytes / DMA rate). Results go to
``benchmarks/results/npu_network_sim_<date>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("mobilenet_v2", "efficientnet_lite", "resnet18", "bert_encoder")


#: Kinds that did not exist before the vector unit ran layers: softmax, layer norm and the
#: table functions were float layers (dequantize, float op on the host, quantize).
NEW_KINDS = ("softmax", "layer_norm", "lut", "scale")


@contextlib.contextmanager
def host_vector_layers() -> Iterator[None]:
    """The compiler as it was before the vector unit ran layers: every vector-unit layer on
    the host (its rules fail with a stated reason) and the transformer ops in float."""
    from lepton_compiler.passes.layers import REGISTRY
    from lepton_compiler.target import npu_constraints as rules

    removed = {name: REGISTRY.pop(name) for name in NEW_KINDS if name in REGISTRY}

    def host_only(op: Any, spec: Any) -> str:
        return f"{op.name}: vector-unit layers kept on the host (baseline)"

    def gemm_only(op: Any, spec: Any) -> str | None:
        return rules.fits_sram(op, spec) if op.groups == 1 else host_only(op, spec)

    saved = {}
    for kind in REGISTRY.values():
        replaced = tuple(host_only if r is rules.fits_vector_unit
                         else gemm_only if r is rules.conv_engine else r
                         for r in kind.npu_rules)
        if replaced != kind.npu_rules:
            saved[kind] = kind.npu_rules
            kind.npu_rules = replaced
    try:
        yield
    finally:
        for kind, kept in saved.items():
            kind.npu_rules = kept
        REGISTRY.update(removed)


def measure(case: Any, workdir: Path, cascade: bool = True) -> dict[str, Any]:
    """Build ``case`` int8 for the Lepton target and profile it once in sim mode."""
    import lepton_compiler as lc
    import lepton_runtime

    compiled = lc.build(case.model, case.inputs, target="lepton", cascade=cascade,
                        quantize=lc.QuantConfig(calibration_data=case.calibration))
    path = compiled.export(workdir / f"{case.name}.lepton")
    profile = lepton_runtime.load(path, mode="sim").profile(*case.inputs)
    npu = [k for k in profile.kernels if k.unit == "npu"]
    host = [k for k in profile.kernels if k.unit != "npu"]
    with tarfile.open(path) as tar:  # the artifact is a plain tar; plan.json lists tensors
        plan = json.loads(tar.extractfile("plan.json").read())

    def call_bytes(kernel: Any) -> int:  # what the call reads and writes
        call = plan["calls"][kernel.index]
        return sum(int(np.prod(plan["tensors"][t]["shape"])) * np.dtype(
            plan["tensors"][t]["dtype"]).itemsize for t in call["args"])

    report = compiled.report
    import torch

    with torch.no_grad():
        real = case.model(*(torch.from_numpy(a) for a in case.inputs)).numpy().ravel()
    got = np.asarray(compiled(*case.inputs), np.float64).ravel()
    return {
        "cosine_to_fp32": float(got @ real / (np.linalg.norm(got) * np.linalg.norm(real))),
        "npu_mac_share": report.npu_mac_share,
        "total_macs": report.total_macs,
        "host_layers": [f"{o.layer} ({o.kind})" for o in report.fallbacks()],
        "npu_cycles": sum(k.cycles for k in npu),
        "host_equivalent_cycles": sum(k.cycles for k in host),
        "total_cycles": profile.total_cycles,
        "npu_dram_bytes": profile.total_dram_bytes,
        # a host fallback reads its inputs and writes its outputs through DRAM too
        "host_dram_bytes": sum(call_bytes(k) for k in host),
        "onchip_bytes": profile.total_onchip_bytes,
        "cascades": len(report.cascades),
        "npu_min_dram_bytes": sum(k.min_dram_bytes for k in npu),
        "npu_roofline_cycles": sum(profile.roofline_cycles(k) for k in npu),
        "npu_kernel_calls": len(npu), "host_kernel_calls": len(host),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from lepton_compiler.examples.bench.runner import machine_info, make_cases
    from lepton_compiler.target.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    spec = load_spec()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lepton-netsim-") as tmp:
        for case in make_cases(args.models.split(","), calibration=4):
            with host_vector_layers():
                before = measure(case, Path(tmp), cascade=False)
            after = measure(case, Path(tmp))
            dram = {k: r["npu_dram_bytes"] + r["host_dram_bytes"] for k, r in
                    (("before", before), ("after", after))}
            rows.append({"model": case.name, "description": case.description,
                         "host_vector_layers": before, "vector_unit": after,
                         "cycles_ratio": before["total_cycles"] / after["total_cycles"],
                         "dram_ratio": dram["after"] / dram["before"]})
            print(f"{case.name:<18} MACs on NPU {before['npu_mac_share']:7.2%} -> "
                  f"{after['npu_mac_share']:7.2%}; cycles {before['total_cycles']:>11,} -> "
                  f"{after['total_cycles']:>11,} ({rows[-1]['cycles_ratio']:.2f}x fewer; "
                  f"NPU {after['npu_cycles']:,} + host {after['host_equivalent_cycles']:,}); "
                  f"NPU roofline {after['npu_roofline_cycles']:,.0f}; DRAM "
                  f"(NPU + host) {dram['before']:,} -> {dram['after']:,} B "
                  f"({1 - rows[-1]['dram_ratio']:.0%} less; {after['cascades']} cascades); "
                  f"cosine to fp32 {after['cosine_to_fp32']:.4f}",
                  flush=True)
    result = {"benchmark": "npu_network_sim", "spec": spec.name,
              "spec_fingerprint": spec.fingerprint(),
              "host_fallback": vars(spec.host_fallback),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(1), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M")
    out = RESULTS / f"npu_network_sim_{stamp}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
