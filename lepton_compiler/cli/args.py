"""Argument helpers shared by the ``lepton`` subcommands: shapes, ONNX paths, the
quantization options and the example inputs they imply."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def parse_shape(text: str) -> tuple[str | None, list[int]]:
    name, sep, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad --input-shape {text!r}; expected NAME=1,3,224,224 or 1,3,224,224"
        ) from None
    return (name if sep else None), shape


def quant_config(args: argparse.Namespace, data_flag: str = "--calib"):
    """The QuantConfig the quantization options describe (None without --quantize)."""
    from lepton_compiler.errors import OptionError
    from lepton_compiler.optimize.quantization import QuantConfig, load_samples

    if getattr(args, "quantize", "int8") is None:
        for flag in ("calib", "calib_table", "save_calib_table", "skip"):
            if getattr(args, flag, None):
                raise OptionError(f"--{flag.replace('_', '-')} needs --quantize int8")
        return None
    if not args.calib and not getattr(args, "calib_table", None):
        raise OptionError(f"quantizing needs calibration data: pass {data_flag} data.npz"
                          + (" or --calib-table table.json" if data_flag == "--calib" else ""))
    return QuantConfig(
        calibration_data=load_samples(args.calib) if args.calib else None,
        method=args.calib_method, percentile=args.percentile,
        per_channel=not args.per_tensor,
        skip=[s for s in (args.skip or "").split(",") if s],
        table=getattr(args, "calib_table", None))


def example_inputs(args: argparse.Namespace, config) -> list | None:
    if args.input_shape:
        return [np.zeros(shape, dtype=np.float32) for _, shape in args.input_shape]
    if config is not None and config.calibration_data:
        first = config.calibration_data[0]  # fixes dynamic input shapes like an example
        return list(first.values()) if isinstance(first, dict) else list(first)
    return None


def onnx_path(text: str, command: str) -> Path:
    from lepton_compiler.errors import OptionError

    model = Path(text)
    if model.suffix.lower() != ".onnx":
        raise OptionError(f"{model}: `lepton {command}` takes an .onnx file")
    return model


def report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, help="write the placement report as JSON")
    p.add_argument("--dot", default=None, help="write the layer graph as Graphviz DOT")
    p.add_argument("--svg", default=None, help="write the layer graph as SVG")


def calibration_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib", default=None, metavar="DATA.npz",
                   help="calibration samples: one array per input, samples stacked on axis 0")
    p.add_argument("--calib-method", default="minmax",
                   choices=["minmax", "percentile", "entropy", "mse"],
                   help="how activation ranges are chosen (default minmax)")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="kept share for --calib-method percentile (default 99.99)")
    p.add_argument("--per-tensor", action="store_true",
                   help="one weight scale per tensor instead of per output channel")
    p.add_argument("--skip", default=None, metavar="LAYER,...",
                   help="layers to keep in float (names as in quant-report)")
