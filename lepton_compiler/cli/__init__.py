"""The ``lepton`` command line: compile, run, inspect, check, quant-report, demo.

Errors print one line (``error: ...``) and exit with status 1; ``--verbose`` adds the
traceback and the compiler's stage log. Usage errors exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lepton_compiler.cli.args import (
    calibration_options,
    example_inputs,
    onnx_path,
    parse_shape,
    quant_config,
    report_options,
)


def cmd_compile(args: argparse.Namespace) -> int:
    from lepton_compiler.pipeline import build

    model = onnx_path(args.model, "compile")
    config = quant_config(args)
    prune = None
    if args.prune is not None:
        from lepton_compiler.optimize.pruning import PruneConfig

        prune = PruneConfig(ratio=args.prune, criterion=args.prune_criterion,
                            skip=[s for s in (args.prune_skip or "").split(",") if s])
    start = time.perf_counter()
    compiled = build(str(model), example_inputs(args, config), cpu=args.cpu, target=args.target,
                     spec=args.spec, quantize=config, prune=prune, tuning_db=args.tuning_db,
                     cascade=not args.no_cascade)
    out = compiled.export(args.output)
    if args.save_calib_table:
        table = compiled.quantization.table.save(args.save_calib_table)
        print(f"wrote calibration table {table}")
    info = compiled.build_info
    print(f"compiled {model} -> {out} ({out.stat().st_size / 1e6:.2f} MB, "
          f"{info['kernels']} kernels, {time.perf_counter() - start:.1f}s)")
    for i in compiled.inputs:
        print(f"  input  {i}")
    for o in compiled.outputs:
        print(f"  output {o}")
    if info.get("tuned_kernels"):
        tuned = info["tuned_kernels"].values()
        host = sum(v == "metaschedule" for v in tuned)
        print(f"  tuned schedules: {len(tuned) - host} NPU kernels, {host} host kernels")
    if info.get("pruning"):
        from lepton_compiler.optimize.pruning import PruneReport

        print("  pruning:\n" + "\n".join(
            "    " + line for line in PruneReport.from_dict(info["pruning"]).table().splitlines()))
    quant = info.get("quantization")
    if quant:
        print(f"  int8 ({quant['method']} calibration): {len(quant['quantized'])} layers "
              f"quantized, {len(quant['float'])} kept in float")
        for name, reason in quant["float"].items():
            print(f"  float {name}: {reason}")
    if info.get("npu_kernels"):
        print(f"  on the NPU: {', '.join(info['npu_kernels'])}")
    for fallback in info.get("fallbacks", []):
        print(f"  host fallback {fallback['layer']}: {fallback['reason']}")
    for c in compiled.report.cascades:
        replanned = f"; replanned {', '.join(c['replanned'])}" if c.get("replanned") else ""
        print(f"  cascade {c['producer']} -> {c['consumer']}: {c['bytes']} B kept in SRAM"
              f"{replanned}")
    return 0


def _write_report(report, args: argparse.Namespace) -> None:
    for flag, render in (("json", report.to_json), ("dot", report.to_dot),
                         ("svg", report.to_svg)):
        target = getattr(args, flag, None)
        if target:
            Path(target).write_text(render())
            print(f"wrote {target}")


def cmd_check(args: argparse.Namespace) -> int:
    from lepton_compiler.pipeline import check

    model = onnx_path(args.model, "check")
    examples = ([np.zeros(shape, dtype=np.float32) for _, shape in args.input_shape]
                if args.input_shape else None)
    report = check(str(model), examples, target=args.target, spec=args.spec,
                   quantize=not args.float)
    print(report.table())
    _write_report(report, args)
    return 1 if report.unsupported else 0


def cmd_quant_report(args: argparse.Namespace) -> int:
    from lepton_compiler.optimize.quantization import load_samples
    from lepton_compiler.pipeline import analyze_quantization

    model = onnx_path(args.model, "quant-report")
    config = quant_config(args)
    data = load_samples(args.data) if args.data else None
    report = analyze_quantization(str(model), example_inputs(args, config), quantize=config,
                                  data=data, cpu=args.cpu)
    print(report.table())
    if args.png:
        print(f"wrote {report.plot(args.png)}")
    if args.json:
        Path(args.json).write_text(report.to_json())
        print(f"wrote {args.json}")
    return 0


def _load_inputs(session, specs: Sequence[str]) -> dict[str, np.ndarray]:
    from lepton_runtime import InputError

    names = [i.name for i in session.inputs]
    arrays: dict[str, np.ndarray] = {}
    for k, spec in enumerate(specs):
        name, sep, file = spec.rpartition("=")
        if not sep:
            if k >= len(names):
                raise InputError(f"too many --input files: the model takes {len(names)}")
            name = names[k]
        try:
            arrays[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read input {name!r} from {file}: {err}") from None
    return arrays


def cmd_run(args: argparse.Namespace) -> int:
    import lepton_runtime

    session = lepton_runtime.load(args.artifact, mode=args.mode)
    inputs = _load_inputs(session, args.input or [])
    result = session.run(**inputs)
    outputs = result if isinstance(result, tuple) else (result,)
    named = {o.name: arr for o, arr in zip(session.outputs, outputs, strict=True)}
    if args.output:
        out = Path(args.output)
        if out.suffix == ".npz":
            np.savez(out, **named)
        elif len(named) == 1:
            np.save(out, outputs[0])
        else:
            raise lepton_runtime.InputError(
                f"the model has {len(named)} outputs; write them with --output FILE.npz"
            )
        print(f"wrote {out}")
    for name, arr in named.items():
        flat = arr.reshape(-1)
        preview = np.array2string(flat[:6], precision=4, separator=", ")
        print(f"{name}: {arr.dtype}{list(arr.shape)} {preview}{' ...' if flat.size > 6 else ''}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from lepton_compiler.reports.profile_report import run_profile_command

    return run_profile_command(args, _load_inputs)


def cmd_bench(args: argparse.Namespace) -> int:
    from lepton_compiler.examples.bench.runner import main_args

    main_args(args)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import lepton_runtime

    info = lepton_runtime.inspect(args.artifact)
    m = info["manifest"]
    target = m.get("target", {})
    print(f"artifact: {args.artifact}")
    print(f"  format v{m.get('format_version')}, abi {m.get('abi')}, compiler "
          f"{m.get('compiler', {}).get('version')}, tvm {m.get('tvm_version')}")
    print(f"  target: {target.get('kind')} ({target.get('system')}/{target.get('machine')}, "
          f"cpu {target.get('mcpu')})")
    if target.get("gemm_path"):
        print(f"  NPU emulation GEMM path: {target['gemm_path']}")
    for i in m.get("inputs", []):
        print(f"  input  {i['name']}: {i['dtype']}{i['shape']}")
    for o in m.get("outputs", []):
        print(f"  output {o['name']}: {o['dtype']}{o['shape']}")
    shapes = info.get("shapes", [])
    if len(shapes) > 1:
        print(f"  input shapes: {len(shapes)} compiled shape sets (one plan each)")
        for k, entry in enumerate(shapes):
            print(f"    {k}: " + ", ".join(f"{name}{dims}" for name, dims in entry.items()))
    pins = info.get("pins", [])
    if pins:
        print("  inputs fixed at build time (every call is checked):" +
              "".join(f"\n    {p}" for p in pins))
    print(f"  kernels: {len(m.get('kernels', []))} ({len(info['calls'])} calls)")
    if args.kernels:
        for k, name in enumerate(info["calls"]):
            print(f"    {k:3d} {name}")
    sizes = ", ".join(f"{name} {size / 1e3:.1f} kB" for name, size in info["members"].items())
    print(f"  members: {sizes}")
    print(f"  arena: {info['arena_bytes'] / 1e3:.1f} kB")
    guards = info.get("guards", [])
    print(f"  value checks: {len(guards)}" + "".join(f"\n    {g}" for g in guards))
    if args.ops or args.json or args.dot or args.svg:
        from lepton_compiler.reports.placement import PlacementReport

        raw = m.get("report")
        if raw is None:
            from lepton_runtime.errors import ArtifactError

            raise ArtifactError(f"{args.artifact}: the artifact carries no placement report "
                                "(built by an older compiler); rebuild it")
        report = PlacementReport.from_dict(raw)
        if args.ops:
            print(report.table())
        _write_report(report, args)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lepton_compiler.examples.demo import run_demo

    print("Lepton demo: compiling the bundled CNN (conv, batch-norm, pooling, residual, linear) "
          "for the host CPU ...")
    r = run_demo(batch=args.batch)
    print(f"  compiled in {r.compile_s:.1f}s: {r.kernels} kernels, artifact "
          f"{r.artifact_bytes / 1e3:.0f} kB")
    print(f"  max |lepton - torch| = {r.max_abs_error:.2e} (relative {r.relative_error:.2e})")
    print(f"  exported artifact reloaded by lepton_runtime: "
          f"{'bit-identical' if r.artifact_matches else 'MISMATCH'}")
    print(f"  latency: lepton {r.latency_ms:.3f} ms, torch eager {r.reference_ms:.3f} ms "
          f"(batch {args.batch})")
    print(f"  predicted classes: {r.top1}")
    from lepton_compiler.examples.demo import run_quantized_demo

    print("Lepton NPU: training the digits CNN on scikit-learn's digits, then int8 "
          "quantization for the Lepton NPU ...")
    q = run_quantized_demo()
    print(f"  trained in {q.train_s:.1f}s; int8 build (calibrated on 360 training digits) in "
          f"{q.compile_s:.1f}s, {q.npu_kernels} kernels on the NPU")
    print(f"  held-out accuracy: float {q.float_accuracy:.1%}, int8 {q.int8_accuracy:.1%}; "
          f"top-1 agreement {q.agreement:.1%}")
    print(f"  fast mode {'bit-exact' if q.fast_exact else 'MISMATCH'}, sim mode "
          f"{'bit-exact' if q.sim_exact else 'MISMATCH'} vs the numpy integer reference")
    print(f"  sim: {q.cycles} cycles for a batch of 30 ({q.macs / 1e6:.1f} M MACs; host "
          "fallbacks at the spec's stated host cost)")
    ok = r.ok and q.ok
    print("demo passed" if ok else "demo FAILED")
    return 0 if ok else 1


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lepton", description="Lepton Compiler: compile, run and inspect models."
    )
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show the stage log and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile an ONNX model to a .lepton artifact")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("-o", "--output", required=True, help="artifact to write (.lepton)")
    p.add_argument("--input-shape", action="append", type=parse_shape, metavar="[NAME=]DIMS",
                   help="fix a dynamic input shape, e.g. 1,3,224,224 (once per input, in order)")
    p.add_argument("--cpu", default=None,
                   help="LLVM cpu for the kernels (default: this machine's)")
    p.add_argument("--target", default="host", choices=["host", "lepton"],
                   help="host CPU (default) or the Lepton NPU with host fallback")
    p.add_argument("--spec", default=None, help="NPU spec TOML for --target lepton")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8 post-training quantization (needs --calib or --calib-table)")
    calibration_options(p)
    p.add_argument("--prune", type=float, default=None, metavar="RATIO",
                   help="structured pruning: remove this fraction of channels, e.g. 0.5")
    p.add_argument("--prune-criterion", default="l1", choices=["l1", "l2"],
                   help="channel importance for --prune (default l1)")
    p.add_argument("--prune-skip", default=None, metavar="LAYERS",
                   help="comma-separated layers (conv2d_0, dense_1, ...) to leave whole")
    p.add_argument("--calib-table", default=None, metavar="TABLE.json",
                   help="use a saved calibration table instead of calibrating")
    p.add_argument("--tuning-db", default=None, metavar="DIR",
                   help="use the best schedules recorded by `lepton tune` (and its measured "
                        "cascade choices)")
    p.add_argument("--no-cascade", action="store_true",
                   help="--target lepton: keep every activation in DRAM between NPU layers "
                        "(default: cascade them through SRAM where they fit)")
    p.add_argument("--save-calib-table", default=None, metavar="TABLE.json",
                   help="write the calibration table (reproducible builds)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("quant-report",
                       help="per-layer int8 accuracy (SQNR, cosine) of an ONNX model")
    p.add_argument("model", help="the .onnx file")
    calibration_options(p)
    p.add_argument("--data", default=None, metavar="DATA.npz",
                   help="held-out samples to measure on (default: the calibration data)")
    p.add_argument("--input-shape", action="append", type=parse_shape, metavar="[NAME=]DIMS",
                   help="fix a dynamic input shape (once per input, in order)")
    p.add_argument("--cpu", default=None, help="LLVM cpu for the kernels")
    p.add_argument("--png", default=None, help="write the per-layer chart (PNG)")
    p.add_argument("--json", default=None, help="write the report as JSON")
    p.set_defaults(func=cmd_quant_report)

    p = sub.add_parser("run", help="run an artifact on .npy inputs")
    p.add_argument("artifact")
    p.add_argument("--mode", default="fast", choices=["fast", "sim"],
                   help="NPU execution mode (sim adds cycle accounting; NPU artifacts only)")
    p.add_argument("--input", "-i", action="append", metavar="[NAME=]FILE.npy",
                   help="an input array (once per input, in order or by name)")
    p.add_argument("--output", "-o", help="write the output (.npy) or all outputs (.npz)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("profile", help="per-kernel time (fast) or NPU cycles (sim) of an "
                                       "artifact, with an HTML report")
    p.add_argument("artifact")
    p.add_argument("--mode", default="sim", choices=["fast", "sim"],
                   help="sim: NPU cycles, utilisation, DRAM bytes (default); fast: wall time")
    p.add_argument("--input", "-i", action="append", metavar="[NAME=]FILE.npy",
                   help="an input array (default: seeded random inputs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--html", default=None, help="write the HTML report")
    p.add_argument("--json", default=None, help="write the profile as JSON")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("inspect", help="verify an artifact and show its signature and kernels")
    p.add_argument("artifact")
    p.add_argument("--kernels", action="store_true", help="list every kernel call in order")
    p.add_argument("--ops", action="store_true",
                   help="the placement report: per layer NPU or host, fused ops, reasons")
    report_options(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("check", help="pre-flight: where each op of an ONNX model would run, "
                                     "and why, without compiling")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--target", default="lepton", choices=["host", "lepton"])
    p.add_argument("--spec", default=None, help="NPU spec TOML")
    p.add_argument("--float", action="store_true",
                   help="check a float32 build (default: an int8 build)")
    p.add_argument("--input-shape", action="append", type=parse_shape, metavar="[NAME=]DIMS",
                   help="fix a dynamic input shape (once per input, in order)")
    report_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("bench", help="benchmark models against PyTorch, onnxruntime and TVM "
                                     "(latency, fidelity, NPU sim); JSON, markdown, charts")
    from lepton_compiler.examples.bench.runner import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_bench)

    from lepton_compiler.cli.tune import add_parser as add_tune

    add_tune(sub, calibration_options, parse_shape)

    p = sub.add_parser("demo", help="compile and run the bundled model, check it against torch")
    p.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # third-party deprecation chatter is not the user's concern
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
    from lepton_runtime.errors import LeptonError

    try:
        return args.func(args)
    except LeptonError as err:
        if args.verbose:
            raise
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        print(f"error: {'; '.join(lines) or type(err).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
