"""Lepton NPU int8 GEMM in fast mode vs numpy fp32 (BLAS) and onnxruntime int8 MatMulInteger.

    python -m benchmarks.npu_gemm [--threads 2] [--repeats 20]

All systems run in one process with the same thread count; throughput in GOP/s (2 ops per
MAC) and the ratio to onnxruntime int8. Sim mode figures (cycles, MAC utilisation) for the
same shapes come from the kernel's sim counters, DMA staging included. Results go to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [(256, 256, 256), (512, 512, 512)]


def _median_s(fn, repeats: int) -> float:
    from lepton_compiler.timing import measure

    return measure(fn, repeats).median_ms / 1e3


def _ort_single_op(node, inputs: list, output, threads: int):
    """An onnxruntime session for a one-node int8 model (IR 8, which onnxruntime accepts)."""
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(helper.make_graph([node], "g", inputs, [output]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _ort_matmul_integer(m: int, n: int, k: int, threads: int):
    from onnx import TensorProto, helper

    return _ort_single_op(
        helper.make_node("MatMulInteger", ["a", "b"], ["y"]),
        [helper.make_tensor_value_info("a", TensorProto.INT8, [m, k]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [k, n])],
        helper.make_tensor_value_info("y", TensorProto.INT32, [m, n]), threads)


def _measure(m: int, n: int, k: int, spec, args, build_matmul) -> dict:
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    kernel = build_matmul(m, n, k)
    assert np.array_equal(kernel.run(a, b), a.astype(np.int32) @ b.astype(np.int32))
    ops = 2.0 * m * n * k
    session = _ort_matmul_integer(m, n, k, args.threads)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    t_lepton = _median_s(lambda: kernel.run(a, b), args.repeats)
    t_ort = _median_s(lambda: session.run(None, {"a": a, "b": b}), args.repeats)
    t_blas = _median_s(lambda: af @ bf, args.repeats)
    sim = kernel.sim_report(a, b)
    return {
        "shape": [m, n, k],
        "lepton_fast_gops": ops / t_lepton / 1e9,
        "onnxruntime_int8_gops": ops / t_ort / 1e9,
        "numpy_fp32_gops": ops / t_blas / 1e9,
        "ratio_to_onnxruntime": t_ort / t_lepton,
        "sim_cycles": sim["cycles"],
        "sim_roofline_cycles": sim["roofline_cycles"],
        "sim_mac_utilisation": sim["utilisation"],
        "sim_dram_bytes": sim["dram_bytes"],
    }


def _ort_conv_integer(x_shape, w_shape, pad: int, threads: int, x_type: int):
    from onnx import TensorProto, helper

    return _ort_single_op(
        helper.make_node("ConvInteger", ["x", "w"], ["y"], pads=[pad] * 4),
        [helper.make_tensor_value_info("x", x_type, list(x_shape)),
         helper.make_tensor_value_info("w", TensorProto.INT8, list(w_shape))],
        helper.make_tensor_value_info("y", TensorProto.INT32, None), threads)


def _measure_conv(args) -> dict:
    """ResNet-18 layer1 3x3 conv (56x56x64 -> 64), Lepton NHWC vs onnxruntime ConvInteger."""
    from onnx import TensorProto

    from lepton_compiler.target.npu_kernels import Conv2dShape, build_conv2d

    shape = Conv2dShape(1, 56, 56, 64, 64, 3, 3, (1, 1), (1, 1, 1, 1))
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 56, 56, 64), dtype=np.int8)
    w = rng.integers(-128, 128, (3, 3, 64, 64), dtype=np.int8)
    kernel = build_conv2d(shape)
    ops = 2.0 * np.prod(shape.gemm)
    t_lepton = _median_s(lambda: kernel.run(x, w), args.repeats)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    w_oihw = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    try:
        session = _ort_conv_integer(x_nchw.shape, w_oihw.shape, 1, args.threads,
                                    TensorProto.INT8)
        feed = {"x": x_nchw, "w": w_oihw}
        session.run(None, feed)
    except Exception:  # onnxruntime's ConvInteger may take only uint8 activations
        session = _ort_conv_integer(x_nchw.shape, w_oihw.shape, 1, args.threads,
                                    TensorProto.UINT8)
        feed = {"x": x_nchw.view(np.uint8), "w": w_oihw}
    t_ort = _median_s(lambda: session.run(None, feed), args.repeats)
    return {"shape": "resnet18 layer1 3x3 conv 56x56x64->64",
            "lepton_fast_gops": ops / t_lepton / 1e9,
            "onnxruntime_int8_gops": ops / t_ort / 1e9,
            "ratio_to_onnxruntime": t_ort / t_lepton}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ["LEPTON_NUM_THREADS"] = str(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from lepton_compiler.target.npu_kernels import build_matmul
    from lepton_compiler.target.spec import load_spec

    spec = load_spec()
    rows = [_measure(m, n, k, spec, args, build_matmul) for m, n, k in SHAPES]
    conv = _measure_conv(args)
    report = {"benchmark": "npu_gemm", "conv": conv, "threads": args.threads, "spec": spec.name,
              "spec_fingerprint": spec.fingerprint(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"npu_gemm_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'shape':<14}{'lepton GOP/s':>13}{'ORT int8':>10}{'np fp32':>9}{'vs ORT':>8}"
          f"{'sim util':>10}")
    for r in rows:
        print(f"{'x'.join(map(str, r['shape'])):<14}{r['lepton_fast_gops']:>13.1f}"
              f"{r['onnxruntime_int8_gops']:>10.1f}{r['numpy_fp32_gops']:>9.1f}"
              f"{r['ratio_to_onnxruntime']:>7.2f}x{r['sim_mac_utilisation']:>10.0%}")
    print(f"{conv['shape']}: lepton {conv['lepton_fast_gops']:.1f} GOP/s, onnxruntime "
          f"ConvInteger {conv['onnxruntime_int8_gops']:.1f} GOP/s, "
          f"{conv['ratio_to_onnxruntime']:.2f}x")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
