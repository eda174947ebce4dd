"""``lepton tune``: run or resume a tuning session, or show its status."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, calibration_options, parse_shape) -> None:
    p = sub.add_parser("tune", help="search NPU schedules of an ONNX model's int8 kernels "
                                    "and MetaSchedule host schedules (resumable; records "
                                    "in --work-dir)")
    p.add_argument("model", nargs="?", help="the .onnx file (not needed with --status)")
    p.add_argument("--work-dir", default="tune", help="tuning database folder (default tune/)")
    p.add_argument("--target", default="lepton", choices=["lepton", "host"],
                   help="lepton: NPU kernels (int8, needs --calib); host: the float model's "
                        "kernels with MetaSchedule")
    p.add_argument("--trials", type=int, default=2000,
                   help="measurements this session (NPU plans; --target host: MetaSchedule)")
    p.add_argument("--host-trials", type=int, default=None,
                   help="MetaSchedule trials over the host kernels (default: 0 for lepton)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runner", default="sim", choices=["sim", "host", "rpc"],
                   help="sim: simulated cycles (default); host: wall time; rpc: a tracker")
    p.add_argument("--tracker", default=None, metavar="HOST:PORT", help="for --runner rpc")
    p.add_argument("--key", default="lepton", help="RPC device key (default lepton)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds before a candidate counts as hung")
    p.add_argument("--spec", default=None, help="NPU spec TOML")
    p.add_argument("--input-shape", action="append", type=parse_shape, metavar="[NAME=]DIMS")
    p.add_argument("--status", action="store_true",
                   help="print the database's per-task summary and exit")
    calibration_options(p)
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from lepton_compiler.cli.args import example_inputs, onnx_path, quant_config
    from lepton_compiler.errors import OptionError
    from lepton_compiler.tuning.database import Database
    from lepton_compiler.tuning.rpc import RPCRunner
    from lepton_compiler.tuning.tuner import summarize, tune

    if args.status:
        print(summarize(Database(args.work_dir, create=False), None))
        return 0
    if args.model is None:
        raise OptionError("lepton tune needs a model (or --status)")
    model = onnx_path(args.model, "tune")
    config = quant_config(args) if args.target == "lepton" or args.calib else None
    runner: object = args.runner
    if args.runner == "rpc":
        if not args.tracker:
            raise OptionError("--runner rpc needs --tracker HOST:PORT")
        runner = RPCRunner(args.tracker, args.key, timeout=args.timeout)
    session = tune(str(model), example_inputs(args, config), target=args.target, quantize=config,
                   work_dir=args.work_dir, trials=args.trials, host_trials=args.host_trials,
                   time_budget=args.time_budget,
                   seed=args.seed, runner=runner, spec=args.spec, timeout=args.timeout)
    trials = session.trials_run + session.host_trials_run
    print(f"tuned {model}: {session.trials_run} NPU + {session.host_trials_run} host trials "
          f"in {session.seconds:.1f}s ({session.stopped}); "
          + (f"{session.seconds / trials * 1000:.0f}s per 1000 trials"
             if trials else "nothing left to measure"))
    print(session.summary())
    return 0
