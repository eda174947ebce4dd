"""Stand-alone kernels on the Lepton vector unit: int8 max pooling, int32 residual add, and any
vector-unit layer kernel of the graph build (`build_vector_layer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton_compiler.target.npu_kernels import MODES, _compile, load_kernel_library, read_counters
from lepton_compiler.target.spec import LeptonSpec, load_spec


def int8_maxpool_func(n: int, h: int, w: int, c: int, k: int, stride: int, pad: int) -> Any:
    """TIR for NHWC int8 max pooling; padding never wins (it is the int8 minimum)."""
    from tvm.script import tirx as T

    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1

    @T.prim_func(s_tir=True)
    def maxpool(X: T.Buffer((n, h, w, c), "int8"), OUT: T.Buffer((n, oh, ow, c), "int8")) -> None:
        padded = T.sblock_alloc_buffer((n, h + 2 * pad, w + 2 * pad, c), "int8")
        for b, y, x, ch in T.grid(n, h + 2 * pad, w + 2 * pad, c):
            with T.sblock("pad"):
                vb, vy, vx, vc = T.axis.remap("SSSS", [b, y, x, ch])
                padded[vb, vy, vx, vc] = T.if_then_else(
                    pad <= vy and vy < h + pad and pad <= vx and vx < w + pad,
                    X[vb, T.max(T.min(vy - pad, h - 1), 0), T.max(T.min(vx - pad, w - 1), 0),
                      vc], T.int8(-128))
        for b, y, x, ch, ky, kx in T.grid(n, oh, ow, c, k, k):
            with T.sblock("pool"):
                vb, vy, vx, vc, vky, vkx = T.axis.remap("SSSSRR", [b, y, x, ch, ky, kx])
                with T.init():
                    OUT[vb, vy, vx, vc] = T.int8(-128)
                OUT[vb, vy, vx, vc] = T.max(OUT[vb, vy, vx, vc],
                                          padded[vb, vy * stride + vky, vx * stride + vkx, vc])

    return maxpool


def build_maxpool(n: int, h: int, w: int, c: int, k: int, stride: int, pad: int,
                  spec: LeptonSpec | None = None, cpu: str | None = None) -> VectorKernel:
    """Compile int8 NHWC max pooling onto the vector unit (``vmax`` over channel lanes).

    Channels are padded to a multiple of the vector width on the host side.
    """
    from tvm import s_tir

    from lepton_compiler.target.intrinsics import register_vector_op

    spec = load_spec(spec)
    lanes = spec.vector.lanes
    pc = -(-c // lanes) * lanes
    sch = s_tir.Schedule(int8_maxpool_func(n, h, w, pc, k, stride, pad))
    block = sch.get_sblock("pool")
    b, y, x, ch, ky, kx = sch.get_loops(block)
    co, ci = sch.split(ch, [None, lanes])
    sch.reorder(b, y, x, co, ky, kx, ci)
    sch.parallel(sch.fuse(b, y))
    sch.decompose_reduction(block, ky)
    sch.tensorize(sch.get_loops(sch.get_sblock("pool_update"))[-1],
                  register_vector_op(spec, "max_i8"))
    so = _compile(sch.mod["main"], "maxpool", spec, cpu)
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    return VectorKernel(so, "maxpool", spec, [(n, h, w, pc)], (n, oh, ow, pc), "int8", c)


def build_add_i32(length: int, spec: LeptonSpec | None = None,
                  cpu: str | None = None) -> VectorKernel:
    """Compile ``out = a + b`` over int32 vectors (residual add in the accumulator domain)."""
    from tvm import s_tir
    from tvm.script import tirx as T

    from lepton_compiler.target.intrinsics import register_vector_op

    spec = load_spec(spec)
    lanes = spec.vector.lanes
    padded = -(-length // lanes) * lanes

    @T.prim_func(s_tir=True)
    def add(A: T.Buffer((padded,), "int32"), B: T.Buffer((padded,), "int32"),
            OUT: T.Buffer((padded,), "int32")) -> None:
        for i in T.serial(padded):
            with T.sblock("copy"):
                vi = T.axis.remap("S", [i])
                OUT[vi] = A[vi]
        for i in T.serial(padded):
            with T.sblock("add"):
                vi = T.axis.remap("S", [i])
                OUT[vi] = OUT[vi] + B[vi]

    sch = s_tir.Schedule(add)
    _, ii = sch.split(sch.get_loops(sch.get_sblock("add"))[0], [None, lanes])
    sch.tensorize(ii, register_vector_op(spec, "add_i32"))
    so = _compile(sch.mod["main"], "add", spec, cpu)
    return VectorKernel(so, "add", spec, [(padded,), (padded,)], (padded,), "int32", length)


@dataclass
class VectorKernel:
    """A loaded stand-alone vector-unit kernel (inputs padded to the vector width here)."""

    so_bytes: bytes
    entry: str
    spec: LeptonSpec
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]
    dtype: str
    valid: int  # true size of the padded last axis

    def __post_init__(self) -> None:
        import tvm_ffi

        self._module = load_kernel_library(self.so_bytes)
        self._fn = self._module[self.entry]
        self._from_dlpack = tvm_ffi.from_dlpack

    def run(self, *inputs: np.ndarray, mode: str = "fast") -> np.ndarray:
        from lepton_runtime import aligned_empty

        self._module["lepton_npu_set_mode"](MODES[mode])
        buffers = []
        for x, shape in zip(inputs, self.in_shapes, strict=True):
            buf = aligned_empty(shape, self.dtype)
            buf[...] = 0
            buf[..., : x.shape[-1]] = x
            buffers.append(buf)
        out = aligned_empty(self.out_shape, self.dtype)
        self._fn(*(self._from_dlpack(t) for t in (*buffers, out)))
        return out[..., : self.valid].copy()

    def counters(self, reset: bool = False) -> dict[str, int]:
        return read_counters(self._module, reset)


def build_vector_layer(func: Any, spec: LeptonSpec | None = None,
                       cpu: str | None = None) -> VectorLayerKernel:
    """Compile one int8 layer kernel marked for the vector unit (``npu_vector.VectorWork.mark``)
    as the graph build does: a depthwise kernel takes its weights packed
    (``npu_fast.pack_depthwise``) and runs ``lepton_dwconv_i8`` in fast mode; every kernel runs
    its vector-unit instruction stream in sim mode. Run it with ``kernel.run(*inputs,
    mode=...)``, the inputs in the kernel's parameter order (the output last, allocated here).
    """
    from lepton_compiler.target.npu_fast import DEPTHWISE_ATTR, with_depthwise_call
    from lepton_compiler.target.npu_vector import plan_vector, with_vector_sim, work_of

    spec = load_spec(spec)
    work = work_of(func)
    if work is None:
        raise ValueError("the kernel is not marked for the vector unit")
    if func.attrs is not None and DEPTHWISE_ATTR in func.attrs:
        func = with_depthwise_call(func)
    plan = plan_vector(work, spec)
    func = with_vector_sim(func, plan)
    params = [(tuple(int(d) for d in p.shape), str(p.dtype)) for p in func.params]
    return VectorLayerKernel(_compile(func, "layer", spec, cpu), spec, params, plan)


@dataclass
class VectorLayerKernel:
    """A loaded stand-alone vector-unit layer kernel (see :func:`build_vector_layer`)."""

    so_bytes: bytes
    spec: LeptonSpec
    params: list[tuple[tuple[int, ...], str]]  # (shape, dtype) of every parameter
    plan: Any                                  # the npu_vector.VectorPlan it was built with

    def __post_init__(self) -> None:
        import tvm_ffi

        self._module = load_kernel_library(self.so_bytes)
        self._fn = self._module["layer"]
        self._from_dlpack = tvm_ffi.from_dlpack

    def run(self, *inputs: np.ndarray, mode: str = "fast") -> np.ndarray:
        from lepton_runtime import aligned_empty

        self._module["lepton_npu_set_mode"](MODES[mode])
        buffers = []
        for x, (shape, dtype) in zip(inputs, self.params[:-1], strict=True):
            buf = aligned_empty(shape, dtype)
            buf[...] = np.asarray(x).reshape(shape)
            buffers.append(buf)
        out = aligned_empty(*self.params[-1])
        self._fn(*(self._from_dlpack(t) for t in (*buffers, out)))
        return out

    def counters(self, reset: bool = False) -> dict[str, int]:
        return read_counters(self._module, reset)
