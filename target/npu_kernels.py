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

from lepton_compiler.target.spec import LeptonSpec, load_spec
from lepton_runtime.format import NPU_MODES

MODES = NPU_MODES  # values of lepton_npu_set_mode, one table shared with the runtime
COUNTERS = ("gemm_calls", "macs_issued", "compute_cycles", "vector_cycles", "dma_cycles",
            "dram_bytes", "dma_transfers", "vector_lanes", "onchip_bytes")


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


@dataclass(frozen=True)
class Conv2dShape:
    """An NHWC int8 conv2d (groups = 1) and the GEMM it lowers to."""

    n: int
    h: int
    w: int
    cin: int
    cout: int
    kh: int
    kw: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)

    @property
    def out_hw(self) -> tuple[int, int]:
        top, left, bottom, right = self.padding
        oh = (self.h + top + bottom - self.dilation[0] * (self.kh - 1) - 1) // self.stride[0] + 1
        ow = (self.w + left + right - self.dilation[1] * (self.kw - 1) - 1) // self.stride[1] + 1
        return oh, ow

    @property
    def gemm(self) -> tuple[int, int, int]:
        """(M, N, K): output pixels, output channels, window size x input channels."""
        oh, ow = self.out_hw
        return self.n * oh * ow, self.cout, self.kh * self.kw * self.cin


def int8_conv2d_func(shape: Conv2dShape) -> Any:
    """TIR for an int8 NHWC conv2d as ``im2col`` (window gather) + int8 matmul, zero padding.

    ``im2col`` is the address generation the DMA engine performs: it gathers each output
    pixel's window (any kernel size, stride, dilation, zero padding) into one row, so the
    product runs on the GEMM instruction. Returns ``C[N*OH*OW, Cout]`` (NHWC memory order).
    The body is the graph kernel's (``qkernels.im2col_gemm_macro``).
    """
    from tvm.script import tirx as T

    from lepton_compiler.target.qkernels import im2col_gemm_macro

    im2col_gemm = im2col_gemm_macro(shape, 0)
    s = shape
    m, n_out, k = s.gemm

    @T.prim_func(s_tir=True)
    def conv2d(X: T.Buffer((s.n, s.h, s.w, s.cin), "int8"),
               W: T.Buffer((k, n_out), "int8"),
               C: T.Buffer((m, n_out), "int32")) -> None:
        cols = T.sblock_alloc_buffer((m, k), "int8")
        im2col_gemm(X, W, cols, C)

    return conv2d


def int32_requant_func(m: int, n: int) -> Any:
    """TIR for per-channel requantization of ``ACC[m, n]`` int32 to int8 (see reference)."""
    from tvm.script import tirx as T

    from lepton_compiler.target.intrinsics import requant_macro

    requant_store = requant_macro()

    @T.prim_func(s_tir=True)
    def requant(ACC: T.Buffer((m, n), "int32"), BIAS: T.Buffer((n,), "int32"),
                MUL: T.Buffer((n,), "int32"),
                SH: T.Buffer((n,), "int32"), QP: T.Buffer((3,), "int32"),
                OUT: T.Buffer((m, n), "int8")) -> None:
        for i, j in T.grid(m, n):
            with T.sblock("requant"):
                vi, vj = T.axis.remap("SS", [i, j])
                requant_store(OUT, ACC, BIAS, MUL, SH, QP, vi, vj)

    return requant


def _compile(func: Any, entry: str, spec: LeptonSpec, cpu: str | None) -> bytes:
    import tvm

    from lepton_compiler import tvm_compat
    from lepton_compiler.target.host import resolve_host
    from lepton_compiler.target.npu_codegen import npu_object
    from lepton_compiler.target.parallel_runtime import runtime_object

    host = resolve_host(cpu)
    lib = tvm_compat.compile_tir(tvm.IRModule({entry: func.with_attr("global_symbol", entry)}),
                                 host.tvm_target(), storage_rewrite=False)
    with tempfile.TemporaryDirectory(prefix="lepton-npu-") as tmp:
        workdir = Path(tmp)
        so_path = workdir / "kernel.so"
        objects = [runtime_object(workdir), npu_object(spec, workdir, host)[0]]
        tvm_compat.export_library(lib, str(so_path), objects)
        return so_path.read_bytes()


def build_matmul(m: int, n: int, k: int, spec: LeptonSpec | None = None,
                 cpu: str | None = None) -> NpuKernel:
    """Compile an int8 matmul for the NPU (tensorized, linked with both execution modes)."""
    from tvm import s_tir

    from lepton_compiler.target.npu_schedule import plan_gemm, schedule_matmul

    spec = load_spec(spec)
    plan = plan_gemm(m, n, k, spec)
    sch = s_tir.Schedule(int8_matmul_func(m, n, k))
    schedule_matmul(sch, sch.get_sblock("matmul"), spec, plan)
    return NpuKernel(_compile(sch.mod["main"], "matmul", spec, cpu), plan, spec,
                     (m, n), "matmul")


def build_requant(m: int, n: int, spec: LeptonSpec | None = None,
                  cpu: str | None = None) -> RequantKernel:
    """Compile per-channel requantization (int32 -> int8) onto the vector unit's sequence.

    Shapes are padded to the tile on the host side; run with
    ``kernel.run(acc, multiplier, shift, zero_point, lo, hi, bias=None)``.
    """
    from tvm import s_tir

    from lepton_compiler.target.intrinsics import register_intrinsics

    spec = load_spec(spec)
    mat = spec.matrix
    pm, pn = -(-m // mat.tile_m) * mat.tile_m, -(-n // mat.tile_n) * mat.tile_n
    names = register_intrinsics(spec)
    sch = s_tir.Schedule(int32_requant_func(pm, pn))
    block = sch.get_sblock("requant")
    i, j = sch.get_loops(block)
    io, ii = sch.split(i, [None, mat.tile_m])
    jo, ji = sch.split(j, [None, mat.tile_n])
    sch.reorder(io, jo, ii, ji)
    sch.parallel(sch.fuse(io, jo))
    sch.tensorize(ii, names.requant)
    return RequantKernel(_compile(sch.mod["main"], "requant", spec, cpu), (m, n), (pm, pn), spec)


def build_conv2d(shape: Conv2dShape, spec: LeptonSpec | None = None,
                 cpu: str | None = None) -> NpuKernel:
    """Compile an int8 NHWC conv2d for the NPU: window gather on the host side, GEMM on the
    matrix engine. Run it with ``kernel.run(x_nhwc, w_hwio)``."""
    from tvm import s_tir

    from lepton_compiler.target.npu_schedule import plan_gemm, schedule_matmul

    spec = load_spec(spec)
    plan = plan_gemm(*shape.gemm, spec)
    sch = s_tir.Schedule(int8_conv2d_func(shape))
    schedule_matmul(sch, sch.get_sblock("matmul"), spec, plan)
    gather = sch.get_sblock("im2col")
    sch.parallel(sch.fuse(*sch.get_loops(gather)[:2]))  # batch x output rows
    return NpuKernel(_compile(sch.mod["main"], "conv2d", spec, cpu), plan, spec,
                     (shape.gemm[0], shape.cout), "conv2d", shape)


def load_kernel_library(so_bytes: bytes) -> Any:
    """Load a stand-alone kernel library with tvm_ffi and install its parallel runtime."""
    import tvm_ffi

    fd, name = tempfile.mkstemp(suffix=".so", prefix="lepton-npu-")
    with os.fdopen(fd, "wb") as f:
        f.write(so_bytes)
    try:
        module = tvm_ffi.load_module(name)
    finally:
        os.unlink(name)
    module["lepton_install_backend"]()
    return module


def read_counters(module: Any, reset: bool = False) -> dict[str, int]:
    """The sim-mode counters of a loaded kernel library since the last reset."""
    read = module["lepton_npu_counter"]
    values = {name: int(read(i)) for i, name in enumerate(COUNTERS)}
    if reset:
        read(-1)
    return values


@dataclass
class NpuKernel:
    """A loaded stand-alone NPU kernel: run it in fast or sim mode, read the sim counters."""

    so_bytes: bytes
    plan: Any
    spec: LeptonSpec
    out_shape: tuple[int, int]
    entry: str
    conv: Conv2dShape | None = None

    def __post_init__(self) -> None:
        import tvm_ffi

        self._module = load_kernel_library(self.so_bytes)
        self._fn = self._module[self.entry]
        self._from_dlpack = tvm_ffi.from_dlpack

    def run(self, a: np.ndarray, b: np.ndarray, mode: str = "fast") -> np.ndarray:
        """Run in ``mode`` ("fast" or "sim"): ``a @ b`` for a matmul; for a conv2d, ``a`` is
        the NHWC input and ``b`` the HWIO weights, and the result is NHWC int32."""
        from lepton_runtime import aligned_empty

        self._module["lepton_npu_set_mode"](MODES[mode])
        if self.conv is not None:
            b = b.reshape(self.plan.k, self.plan.n)  # HWIO is [KH*KW*Cin, Cout] row-major
        args = []
        for x in (a, b):
            buf = aligned_empty(x.shape, x.dtype)
            buf[...] = x
            args.append(buf)
        out = aligned_empty(self.out_shape, np.int32)
        self._fn(*(self._from_dlpack(t) for t in (*args, out)))
        if self.conv is not None:
            oh, ow = self.conv.out_hw
            return out.reshape(self.conv.n, oh, ow, self.conv.cout)
        return out

    def sim_report(self, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        """Run once in sim mode and report cycles, utilisation, DRAM bytes and SRAM peaks."""
        from lepton_compiler.target.npu_schedule import sim_report

        self.counters(reset=True)
        self.run(a, b, "sim")
        return sim_report(self.plan, self.spec, self.counters(reset=True))

    def counters(self, reset: bool = False) -> dict[str, int]:
        """The sim-mode counters since the last reset."""
        return read_counters(self._module, reset)


@dataclass
class RequantKernel:
    """A loaded stand-alone requantization kernel."""

    so_bytes: bytes
    shape: tuple[int, int]
    padded: tuple[int, int]
    spec: LeptonSpec

    def __post_init__(self) -> None:
        import tvm_ffi

        self._module = load_kernel_library(self.so_bytes)
        self._fn = self._module["requant"]
        self._from_dlpack = tvm_ffi.from_dlpack

    def run(self, acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, zero_point: int,
            lo: int, hi: int, mode: str = "fast", bias: np.ndarray | None = None
            ) -> np.ndarray:
        from lepton_runtime import aligned_empty

        self._module["lepton_npu_set_mode"](MODES[mode])
        (m, n), (pm, pn) = self.shape, self.padded
        padded_acc = aligned_empty((pm, pn), np.int32)
        padded_acc[...] = 0
        padded_acc[:m, :n] = acc
        vectors = []
        if bias is None:
            bias = np.zeros(n, np.int32)
        for values, fill in ((bias, 0), (multiplier, 1 << 30), (shift, 31)):
            buf = aligned_empty((pn,), np.int32)
            buf[...] = fill
            buf[:n] = values
            vectors.append(buf)
        qp = aligned_empty((3,), np.int32)
        qp[...] = (zero_point, lo, hi)
        out = aligned_empty((pm, pn), np.int8)
        self._fn(*(self._from_dlpack(t) for t in (padded_acc, *vectors, qp, out)))
        return out[:m, :n].copy()

    def counters(self, reset: bool = False) -> dict[str, int]:
        return read_counters(self._module, reset)

