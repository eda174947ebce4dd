"""Stand-alone NPU kernels (one operator, compiled and loaded on its own).

The unit under test for the tensorized schedules and the two execution modes, and the
subject of the NPU micro-benchmarks. Graph-level compilation for ``target="lepton"`` builds on
the same schedules.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .spec import LeptonSpec, load_spec

MODES = {"fast": 0, "sim": 1}
COUNTERS = ("gemm_calls", "macs_issued", "compute_cycles")


def int8_matmul_func(m: int, n: int, k: int) -> Any:
    """TIR for ``C[m, n] = A[m, k] @ B[k, n]`` with int8 operands and an int32 result."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def matmul(A: T.Buffer((m, k), "int8"), B: T.Buffer((k, n), "int8"),
               C: T.Buffer((m, n), "int32")) -> None:
        for i, j, kk in T.grid(m, n, k):
            with T.sblock("matmul"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, kk])
                with T.init():
                    C[vi, vj] = 0
                C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], "int32") * T.cast(B[vk, vj], "int32")

    return matmul


def build_matmul(m: int, n: int, k: int, spec: LeptonSpec | None = None,
                 cpu: str | None = None) -> NpuKernel:
    """Compile an int8 matmul for the NPU (tensorized, linked with both execution modes)."""
    import tvm
    from tvm import s_tir

    from lepton_compiler import lowering, tvm_compat

    from .host import resolve_host
    from .npu_codegen import npu_object
    from .npu_schedule import plan_gemm, schedule_matmul

    spec = load_spec(spec)
    plan = plan_gemm(m, n, k, spec)
    sch = s_tir.Schedule(int8_matmul_func(m, n, k))
    schedule_matmul(sch, sch.get_sblock("matmul"), spec, plan)
    host = resolve_host(cpu)
    func = sch.mod["main"].with_attr("global_symbol", "matmul")
    lib = tvm_compat.compile_tir(tvm.IRModule({"matmul": func}), host.tvm_target())
    with tempfile.TemporaryDirectory(prefix="lepton-npu-") as tmp:
        workdir = Path(tmp)
        so_path = workdir / "kernel.so"
        objects = [lowering.runtime_object(workdir), npu_object(spec, workdir, host.mcpu)]
        tvm_compat.export_library(lib, str(so_path), objects)
        return NpuKernel(so_path.read_bytes(), plan, spec)


@dataclass
class NpuKernel:
    """A loaded stand-alone NPU kernel: run it in fast or sim mode, read the sim counters."""

    so_bytes: bytes
    plan: Any
    spec: LeptonSpec

    def __post_init__(self) -> None:
        import tvm_ffi

        fd, name = tempfile.mkstemp(suffix=".so", prefix="lepton-npu-")
        with os.fdopen(fd, "wb") as f:
            f.write(self.so_bytes)
        try:
            self._module = tvm_ffi.load_module(name)
        finally:
            os.unlink(name)
        self._module["lepton_install_backend"]()
        self._fn = self._module["matmul"]
        self._from_dlpack = tvm_ffi.from_dlpack

    def run(self, a: np.ndarray, b: np.ndarray, mode: str = "fast") -> np.ndarray:
        """``a @ b`` on the NPU kernel in ``mode`` ("fast" or "sim")."""
        from lepton_runtime import aligned_empty

        self._module["lepton_npu_set_mode"](MODES[mode])
        args = []
        for x in (a, b):
            buf = aligned_empty(x.shape, x.dtype)
            buf[...] = x
            args.append(buf)
        out = aligned_empty((a.shape[0], b.shape[1]), np.int32)
        self._fn(*(self._from_dlpack(t) for t in (*args, out)))
        return out

    def counters(self, reset: bool = False) -> dict[str, int]:
        """The sim-mode counters since the last reset."""
        read = self._module["lepton_npu_counter"]
        values = {name: int(read(i)) for i, name in enumerate(COUNTERS)}
        if reset:
            read(-1)
        return values
