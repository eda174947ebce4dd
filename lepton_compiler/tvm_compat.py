"""Version-sensitive TVM calls, kept in one place so a TVM upgrade touches one file."""

from __future__ import annotations

from typing import Any


def call_tir_op():
    import tvm

    return tvm.ir.Op.get("relax.call_tir")


def reshape_op():
    import tvm

    return tvm.ir.Op.get("relax.reshape")


def shape_of(ty: Any) -> tuple[int, ...]:
    """Static shape of a Relax TensorType (raises ValueError when it is not static)."""
    shape = ty.shape
    if shape is None:
        raise ValueError("tensor has no static shape")
    dims = []
    for d in shape.values:
        try:
            dims.append(int(d))
        except TypeError:
            raise ValueError(f"dimension {d} is symbolic") from None
    return tuple(dims)


def dtype_of(ty: Any) -> str:
    return str(ty.dtype)


def tensor_type_class():
    from tvm import relax

    return relax.TensorType


def tuple_type_class():
    from tvm import relax

    return relax.TupleType


def compile_tir(mod: Any, target: Any, *, storage_rewrite: bool = True) -> Any:
    """Compile an IRModule of scheduled prim_funcs for ``target``.

    ``storage_rewrite=False`` works around TVM 0.27's StorageRewrite merging an int8
    intermediate with an int32 buffer behind a tensorized ``tvm_access_ptr`` ("element type
    must match the source buffer"); NPU kernels compile with it off.
    """
    import tvm

    config = {} if storage_rewrite else {"tirx.disable_storage_rewrite": True}
    with tvm.transform.PassContext(config=config):
        return tvm.compile(mod, target=target)


def export_library(lib: Any, path: str, extra_objects: list[str]) -> None:
    lib.export_library(path, addons=extra_objects, options=["-O2", "-pthread"])


def tvm_version() -> str:
    import tvm

    return str(tvm.__version__)


def constant_class():
    """The class of Relax constants (``relax.Constant`` became ``tvm.ir.expr.Constant``)."""
    from tvm.ir.expr import Constant

    return Constant


def is_constant(expr: Any) -> bool:
    return isinstance(expr, constant_class())


def is_tensor_constant(expr: Any) -> bool:
    """A Relax tensor constant (not a scalar IntImm/FloatImm, which share the base class)."""
    return is_constant(expr) and hasattr(expr.value, "numpy")


def constant_numpy(expr: Any) -> Any:
    """The value of a Relax constant as a numpy array."""
    return expr.value.numpy()


def region_buffer(region: Any) -> Any:
    """The buffer a TIR block read/write region refers to (``.source`` since TVM 0.27)."""
    return region.source if hasattr(region, "source") else region.buffer


def param_name(var: Any) -> str:
    """The name of a prim_func parameter (a Var carrying its buffer's name in TVM 0.27)."""
    return var.name if hasattr(var, "name") else var.name_hint


def meta_schedule() -> Any:
    """``tvm.s_tir.meta_schedule``, with its tensor intrinsics imported quickly.

    Building MetaSchedule's CPU rules imports ``tvm.s_tir.tensor_intrin``, which parses ~500
    TVMScript functions; each parse calls ``inspect.stack()``, whose source lookup for the
    parser's ``<ast>`` frames scans every loaded module (60 s with torch loaded, 200 s under a
    profiler). Frames without a source file get no context lines here, which is what
    ``inspect`` returns for them anyway after its scan; the patch lasts only for the import.
    """
    import inspect
    import os
    import sys

    if "tvm.s_tir.tensor_intrin" not in sys.modules:
        original = inspect.stack

        def stack(context: int = 1) -> list:
            frames, frame = [], sys._getframe(1)
            while frame is not None:
                code = frame.f_code
                if os.path.exists(code.co_filename):
                    info = inspect.getframeinfo(frame, context)
                    frames.append(inspect.FrameInfo(frame, info.filename, info.lineno,
                                                    info.function, info.code_context,
                                                    info.index, positions=info.positions))
                else:
                    frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno,
                                                    code.co_name, None, None, positions=None))
                frame = frame.f_back
            return frames

        inspect.stack = stack
        try:
            import tvm.s_tir.tensor_intrin  # noqa: F401
        finally:
            inspect.stack = original
    import tvm.s_tir.meta_schedule as ms

    return ms


def helper_functions(mod: Any) -> dict:
    """The functions of ``mod`` other than ``main`` (GlobalVar -> function)."""
    return {gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"}


def add_functions(mod: Any, functions: dict) -> Any:
    """``mod`` with ``functions`` (GlobalVar -> function) added where it lacks them: a module
    rebuilt around a new ``main`` keeps the PrimFuncs its calls refer to."""
    present = {gv.name_hint for gv in mod.functions}
    for gv, func in functions.items():
        if gv.name_hint not in present:
            mod[gv] = func
    return mod
