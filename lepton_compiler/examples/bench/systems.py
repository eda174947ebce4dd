"""The systems the benchmark compares, each prepared the same way: compile (timed), then a
zero-argument callable that runs one inference on the fixed inputs and returns numpy outputs.

A system that cannot run on a model raises :class:`Unavailable` with the reason; the runner
records it instead of a figure.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class Unavailable(Exception):
    """The system cannot be measured on this model or machine; the message says why."""


@dataclass
class Case:
    """One benchmark model: the torch module, fixed inputs and calibration samples."""

    name: str
    model: Any
    inputs: tuple[np.ndarray, ...]
    calibration: list[tuple[np.ndarray, ...]]
    description: str
    _onnx: bytes | None = None

    def onnx_bytes(self) -> bytes:
        """The model exported to ONNX (once per case)."""
        if self._onnx is None:
            self._onnx = export_onnx(self.model, self.inputs)
        return self._onnx


@dataclass
class Prepared:
    """A compiled system, ready to time."""

    run: Callable[[], Any]
    compile_s: float
    artifact_bytes: int | None = None
    artifact: str = ""                    # what the size measures
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    threads: int
    workdir: Path
    quick: bool


def export_onnx(model: Any, inputs: tuple[Any, ...]) -> bytes:
    """Export a torch module to ONNX bytes; ``inputs`` are numpy arrays or torch tensors.

    The TorchScript exporter is fast; models it cannot export (e.g. the fused attention that
    eval-mode MultiheadAttention uses) go through the dynamo exporter.
    """
    import torch

    example = tuple(torch.as_tensor(x) for x in inputs)
    names = [f"in{i}" for i in range(len(example))]
    buf = io.BytesIO()
    try:
        with torch.no_grad():
            torch.onnx.export(model, example, buf, dynamo=False, opset_version=17,
                              input_names=names)
        return buf.getvalue()
    except Exception:
        program = torch.onnx.export(model, example, dynamo=True, opset_version=18,
                                    input_names=names, verbose=False)
        return program.model_proto.SerializeToString()


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _numpy(value: Any) -> Any:
    """numpy outputs from torch tensors, TVM tensors, or sequences of them."""
    if hasattr(value, "detach"):
        return value.detach().numpy()
    if hasattr(value, "numpy"):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__len__") and hasattr(value, "__getitem__"):
        items = tuple(_numpy(v) for v in value)
        return items[0] if len(items) == 1 else items
    return np.asarray(value)


def torch_eager(case: Case, ctx: Context) -> Prepared:
    import torch

    torch.set_num_threads(ctx.threads)
    args = tuple(torch.from_numpy(x) for x in case.inputs)

    def run() -> Any:
        with torch.no_grad():
            return _numpy(case.model(*args))

    buf = io.BytesIO()
    torch.save(case.model.state_dict(), buf)
    return Prepared(run, 0.0, len(buf.getvalue()), "state_dict")


def torch_compile(case: Case, ctx: Context) -> Prepared:
    import torch

    if ctx.quick:
        raise Unavailable("skipped by --quick: inductor's first compile takes ~35 s per "
                          "model on 2 cores")
    torch.set_num_threads(ctx.threads)
    args = tuple(torch.from_numpy(x) for x in case.inputs)
    compiled = torch.compile(case.model)

    def run() -> Any:
        with torch.no_grad():
            return _numpy(compiled(*args))

    try:
        _, seconds = _timed(run)  # torch.compile compiles on the first call
    except Exception as err:
        raise Unavailable(f"torch.compile failed: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}") from None
    return Prepared(run, seconds, None, "none (JIT)")


def _ort_session(model: bytes | str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _ort_runner(session: Any, inputs: tuple[np.ndarray, ...]) -> Callable[[], Any]:
    feed = {i.name: x for i, x in zip(session.get_inputs(), inputs, strict=True)}
    return lambda: tuple(session.run(None, feed))


def onnxruntime_fp32(case: Case, ctx: Context) -> Prepared:
    data = case.onnx_bytes()
    session, seconds = _timed(lambda: _ort_session(data, ctx.threads))
    return Prepared(_ort_runner(session, case.inputs), seconds, len(data), ".onnx")


def onnxruntime_int8(case: Case, ctx: Context) -> Prepared:
    """Static post-training quantization: QDQ, per-channel int8 weights, int8 activations,
    calibrated on the same samples as Lepton's."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    src, dst = ctx.workdir / f"{case.name}.onnx", ctx.workdir / f"{case.name}.int8.onnx"
    src.write_bytes(case.onnx_bytes())
    names = [i.name for i in _ort_session(str(src), 1).get_inputs()]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([dict(zip(names, s, strict=True)) for s in case.calibration])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    def compile_() -> Any:
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
        return _ort_session(str(dst), ctx.threads)

    session, seconds = _timed(compile_)
    return Prepared(_ort_runner(session, case.inputs), seconds, dst.stat().st_size,
                    "int8 .onnx")


def tvm_relax(case: Case, ctx: Context) -> Prepared:
    """What ``tvm.compile`` gives out of the box: the torch.export importer and TVM's default
    Relax pipeline for this CPU (no tuning, no hand schedules)."""
    import torch
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from lepton_compiler.target.host import resolve_host

    def compile_() -> Any:
        program = torch.export.export(case.model, tuple(torch.from_numpy(x)
                                                        for x in case.inputs))
        mod = from_exported_program(program, keep_params_as_input=False)
        host = resolve_host(None, ctx.threads)
        target = tvm.target.Target({"kind": "llvm", "mcpu": host.mcpu,
                                    "num-cores": ctx.threads})
        return tvm.compile(mod, target=target)

    try:
        executable, seconds = _timed(compile_)
    except Exception as err:
        raise Unavailable(f"tvm.compile failed: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}") from None
    vm = relax.VirtualMachine(executable, tvm.cpu())
    args = [tvm.runtime.tensor(x) for x in case.inputs]
    path = ctx.workdir / f"{case.name}.tvm.so"
    executable.export_library(str(path))
    return Prepared(lambda: _numpy(vm["main"](*args)), seconds, path.stat().st_size,
                    "exported .so")


def _lepton(case: Case, ctx: Context, **options: Any) -> tuple[Any, Prepared, Path]:
    """Build with Lepton and export the artifact; (compiled model, prepared, artifact path)."""
    import lepton_compiler as lc

    compiled, seconds = _timed(lambda: lc.build(case.model, case.inputs,
                                                num_threads=ctx.threads, **options))
    path = compiled.export(ctx.workdir / f"{case.name}.{options.get('target')}.lepton")
    inputs = case.inputs
    return compiled, Prepared(lambda: compiled(*inputs), seconds, Path(path).stat().st_size,
                              ".lepton"), Path(path)


def lepton_host_fp32(case: Case, ctx: Context) -> Prepared:
    return _lepton(case, ctx, target="host")[1]


def lepton_int8(case: Case, ctx: Context) -> Prepared:
    """int8 on the Lepton target in fast mode, plus one sim-mode profile (cycles, DRAM)."""
    import lepton_compiler as lc
    import lepton_runtime

    config = lc.QuantConfig(calibration_data=case.calibration)
    compiled, prepared, path = _lepton(case, ctx, target="lepton", quantize=config)
    profile = lepton_runtime.load(path, mode="sim").profile(*case.inputs)
    npu = [k for k in profile.kernels if k.unit == "npu"]
    roofline = sum(profile.roofline_cycles(k) for k in npu)
    prepared.extra = {
        "npu_mac_share": compiled.report.npu_mac_share,
        "sim": {
            "cycles": profile.total_cycles,
            "mac_utilisation": profile.utilisation,
            "dram_bytes": profile.total_dram_bytes,
            "min_dram_bytes": sum(k.min_dram_bytes for k in npu),
            "roofline_cycles": roofline,
            "roofline_efficiency": roofline / profile.total_cycles if profile.total_cycles
            else 0.0,
            "npu_cycles": sum(k.cycles for k in npu),
            "host_equivalent_cycles": profile.total_cycles - sum(k.cycles for k in npu),
            "npu_kernel_calls": len(npu),
            "host_kernel_calls": len(profile.kernels) - len(npu),
            "ms_at_clock": profile.total_cycles / profile.clock_hz * 1e3
            if profile.clock_hz else None,
        },
    }
    return prepared


SYSTEMS: dict[str, Callable[[Case, Context], Prepared]] = {
    "torch_eager_fp32": torch_eager,
    "torch_compile_fp32": torch_compile,
    "onnxruntime_fp32": onnxruntime_fp32,
    "onnxruntime_int8": onnxruntime_int8,
    "tvm_relax_fp32": tvm_relax,
    "lepton_host_fp32": lepton_host_fp32,
    "lepton_npu_int8": lepton_int8,
}
INT8 = {"onnxruntime_int8", "lepton_npu_int8"}
