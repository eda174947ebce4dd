"""Lower an imported Relax module to scheduled TIR kernels and a flat call chain.

Stages (each a named step, sequenced by the driver):
``simplify`` (fold batch-norm, decompose for inference, fold constants) →
``layout`` (NHWC activations / HWIO weights for conv2d, the layout the host schedules tile) →
``fuse`` (legalize to TIR, FuseOps/FuseTIR) → ``schedule`` (host schedules per kernel) →
``codegen`` (LLVM for the host CPU, linked with the artifact's parallel runtime).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from lepton_compiler import tvm_compat
from lepton_compiler.errors import CompileError
from lepton_compiler.target.parallel_runtime import runtime_object

logger = logging.getLogger(__name__)


def check_well_formed(mod: Any, stage: str) -> None:
    """Raise CompileError when ``mod`` is not well formed after ``stage``."""
    from tvm import relax

    try:
        relax.analysis.well_formed(mod)  # raises on the first violation (TVM 0.27)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CompileError(f"the IR is not well formed after stage '{stage}' ({first}); "
                           "this is a compiler bug, please report it with the model") from None


def fold_constants(mod: Any) -> Any:
    """Fold constant subexpressions (reshaped biases, transposed linear weights)."""
    from tvm import relax

    return relax.transform.FoldConstant()(mod)


def simplify(mod: Any, fold_batch_norm: bool = True) -> Any:
    """Inference simplifications on the graph, before layout and fusion."""
    import tvm
    from tvm import relax

    from lepton_compiler.passes.fold_batch_norm import FoldBatchNorm
    from lepton_compiler.passes.fold_pad import FoldPadIntoConv

    seq = tvm.transform.Sequential(
        [
            relax.transform.FoldConstant(),  # e.g. reshape(bias) -> constant, for the patterns
            *([FoldBatchNorm()] if fold_batch_norm else []),
            FoldPadIntoConv(),
            relax.transform.DecomposeOpsForInference(),
            relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination(),
        ]
    )
    return seq(mod)


def _uses_op(mod: Any, op_name: str) -> bool:
    from tvm import relax

    found = []
    relax.analysis.post_order_visit(
        mod["main"].body,
        lambda e: found.append(True)
        if isinstance(e, relax.Call) and getattr(e.op, "name", None) == op_name else None,
    )
    return bool(found)


def convert_layout(mod: Any) -> Any:
    """conv2d to NHWC/HWIO; transposes at the edges fold into constants or stay as kernels.

    Layout is an optimisation, never a requirement: a graph without conv2d is returned as it
    is, and one that TVM's ConvertLayout cannot handle keeps its original layout.
    """
    import tvm
    from tvm import relax

    from lepton_compiler.passes.cancel_transposes import CancelTransposes

    if not _uses_op(mod, "relax.nn.conv2d"):
        return mod
    seq = tvm.transform.Sequential(
        [
            relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]}),
            relax.transform.Normalize(),
            CancelTransposes(),  # around ops ConvertLayout has no rule for (ReLU6 = clip)
            relax.transform.DeadCodeElimination(),
            relax.transform.FoldConstant(),
        ]
    )
    try:
        return seq(mod)
    except Exception as err:  # TVM raises InternalError (even bad_alloc) on some graphs
        logger.warning("keeping NCHW layout: ConvertLayout failed (%s)",
                       str(err).splitlines()[0] if str(err) else type(err).__name__)
        return mod


def fuse(mod: Any, enabled: bool = True) -> Any:
    """Legalize to TIR and fuse; main becomes a flat chain of call_tir over kernels.

    ``enabled=False`` keeps one kernel per operator (for checking what fusion does).
    """
    import tvm
    from tvm import relax

    from lepton_compiler.lower.fast_math import legalize_map

    fusion = [relax.transform.FuseOps(), relax.transform.FuseTIR()] if enabled else []
    seq = tvm.transform.Sequential(
        [
            # GELU, softmax and exp as vectorisable polynomials (TVM's call libm per element)
            relax.transform.LegalizeOps(legalize_map()),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            # Reshapes become views before fusion: fused into a chain (reshape of a reshape)
            # they would stay a copying kernel that the rewrite after fusion no longer sees.
            relax.transform.RewriteDataflowReshape(),
            *fusion,
            relax.transform.DeadCodeElimination(),
            relax.transform.RewriteDataflowReshape(),
        ]
    )
    mod = seq(mod)
    _check_legalized(mod)
    return mod


def _check_legalized(mod: Any) -> None:
    from tvm import relax

    leftovers: dict[str, int] = {}
    main = mod["main"]

    def visit(expr):
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            name = expr.op.name
            if name not in ("relax.call_tir", "relax.reshape"):
                leftovers[name] = leftovers.get(name, 0) + 1

    relax.analysis.post_order_visit(main.body, visit)
    if leftovers:
        listed = ", ".join(f"{op} ({n}x)" for op, n in sorted(leftovers.items()))
        raise CompileError(
            f"operators with no host lowering remain after legalization: {listed}; "
            "they cannot be compiled for the host yet"
        )


def kernels_of(mod: Any) -> dict[str, Any]:
    """The prim_funcs of a fused module by name."""
    from tvm import tirx

    return {
        gv.name_hint: func
        for gv, func in mod.functions.items()
        if isinstance(func, tirx.PrimFunc)
    }


def schedule(mod: Any, config: Any, npu: Any = None,
             tuned: Any = None) -> tuple[Any, set[str]]:
    """Apply host schedules to every kernel; pre-pack constant weights at compile time.

    Kernels whose weights are constants get a layout-rewrite stage that is split out of the
    kernel and folded into the weights, so the artifact stores them already tiled. With an
    NPU target (a ``LeptonTarget``), quantized GEMM kernels are tensorized onto the NPU
    instead; returns the module and the names of those kernels. ``config=None`` leaves host
    kernels as legalized (``opt_level=0``); with an NPU target, int8 depthwise kernels call
    the linked ``lepton_dwconv_i8`` (``npu_fast.add_fast_paths``). ``tuned`` (a
    ``tuning.TunedSchedules``), when given, supplies tuned NPU plans and tuned host schedules
    (``None`` from either means: no record, use the default).
    """
    import tvm
    from tvm import relax, tirx

    from lepton_compiler.passes.value_guards import is_guard
    from lepton_compiler.target.host_schedule import has_layout_rewrite, schedule_prim_func
    from lepton_compiler.target.npu_fast import DEPTHWISE_ATTR, FAST_ATTR
    from lepton_compiler.target.qkernels import GEMM_ATTR

    mod = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    on_npu: set[str] = set()
    for name, func in kernels_of(mod).items():
        if is_guard(func):
            continue  # serial by design: it reads each trusted value once
        if npu is not None and func.attrs is not None and func.attrs.get(GEMM_ATTR):
            from lepton_compiler.target.npu_schedule import schedule_gemm_kernel

            plan = tuned.npu(func) if tuned is not None else None
            mod[name] = schedule_gemm_kernel(func, npu.spec, plan)
            if plan is not None:
                mod[name] = mod[name].with_attr("lepton.tuned", 1)
            on_npu.add(name)
        elif npu is not None and func.attrs is not None and DEPTHWISE_ATTR in func.attrs:
            # Host work, but the NPU build links lepton_npu.c, whose depthwise layer kernel
            # (add_fast_paths, below) beats any schedule of these loops; they stay its
            # fallback, and get scheduled below if the layer does not get the call.
            continue
        else:
            best = tuned.host(func) if tuned is not None else None
            if best is not None:
                mod[name] = best.with_attr("lepton.tuned", 1)
            elif config is not None:  # None: keep the kernel as legalized (opt_level 0)
                mod[name] = schedule_prim_func(func, config)
    # SplitLayoutRewritePreproc splits the weight pre-pack stage out of the kernels that have
    # one; it rejects kernels whose body is not a tree of compute blocks (the legalized
    # ScatterElements, guards), so those sit out the pass and rejoin the module after it.
    aside = {gv: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)
             and not (f.attrs is not None and "layout_free_buffers" in f.attrs
                      and has_layout_rewrite(f))}
    mod = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv not in aside},
                       attrs=mod.attrs)
    seq = tvm.transform.Sequential(
        [
            relax.transform.SplitLayoutRewritePreproc(),
            relax.transform.FoldConstant(),
        ]
    )
    mod = seq(mod)  # may rename kernels: find the NPU ones again by their attribute
    for gv, f in aside.items():
        mod[gv] = f
    mod = relax.transform.DeadCodeElimination()(mod)
    if npu is not None:
        from lepton_compiler.target.npu_fast import add_fast_paths

        def gemm_kernels(mod: Any) -> set[str]:
            return {name for name, f in kernels_of(mod).items()
                    if f.attrs is not None and f.attrs.get(GEMM_ATTR)}

        def depthwise(mod: Any) -> dict[str, Any]:
            return {name: f for name, f in kernels_of(mod).items()
                    if f.attrs is not None and DEPTHWISE_ATTR in f.attrs}

        # renames the kernels it rewrites
        mod = add_fast_paths(mod, gemm_kernels(mod) | set(depthwise(mod)), npu.spec)
        on_npu = gemm_kernels(mod)
        for name, func in depthwise(mod).items():
            if FAST_ATTR not in func.attrs and config is not None:
                mod[name] = schedule_prim_func(func, config)
        # Layers placed on the vector unit: their instruction stream first (sim mode), the
        # host code (or the depthwise layer call) as the fast mode's path.
        from lepton_compiler.target.npu_vector import plan_vector, with_vector_sim, work_of

        for name, func in kernels_of(mod).items():
            work = work_of(func)
            if work is not None:
                mod[name] = with_vector_sim(func, plan_vector(work, npu.spec))
                on_npu.add(name)
    return mod, on_npu


def codegen(kernels: dict[str, Any], fallback: dict[str, Any], target: Any,
            npu: Any = None, report: dict | None = None) -> bytes:
    """Compile kernels to one shared library and return its bytes.

    A kernel whose schedule fails to compile is recompiled from ``fallback`` (unscheduled),
    so a schedule bug costs speed, never a build. With an NPU target the NPU instructions
    (both execution modes) are linked in, built for the best GEMM path the target CPU's
    features allow; ``report["gemm_path"]`` says which (``npu_codegen.GEMM_PATHS``).
    """
    import tvm

    from lepton_compiler.target.npu_fast import FAST_ATTR

    # StorageRewrite would merge the int8 staging buffers that tensorized kernels address
    # through access_ptr; NPU builds keep every buffer separate.
    rewrite = npu is None

    def module_of(funcs: dict[str, Any]) -> Any:
        return tvm.IRModule(
            {name: f.with_attr("global_symbol", name) for name, f in funcs.items()}
        )

    funcs = dict(kernels)
    try:
        lib = tvm_compat.compile_tir(module_of(funcs), target, storage_rewrite=rewrite)
    except Exception:
        for name in list(funcs):
            try:
                tvm_compat.compile_tir(module_of({name: funcs[name]}), target,
                                        storage_rewrite=rewrite)
            except Exception as err:
                packed = funcs[name].attrs is not None and FAST_ATTR in funcs[name].attrs
                if name not in fallback or packed:  # a packed kernel has no unpacked twin
                    raise CompileError(
                        f"kernel {name} does not compile: {str(err).splitlines()[0]}"
                    ) from None
                logger.warning("schedule of kernel %s does not compile (%s); using the "
                               "unscheduled kernel", name, str(err).splitlines()[0])
                funcs[name] = fallback[name]
        try:
            lib = tvm_compat.compile_tir(module_of(funcs), target, storage_rewrite=rewrite)
        except Exception as err:
            raise CompileError(f"code generation failed: {err}") from None
    with tempfile.TemporaryDirectory(prefix="lepton-build-") as tmp:
        workdir = Path(tmp)
        so_path = workdir / "kernels.so"
        objects = [runtime_object(workdir)]
        if npu is not None:
            from lepton_compiler.target.npu_codegen import npu_object

            obj, path = npu_object(npu.spec, workdir, npu.host)
            objects.append(obj)
            if report is not None:
                report["gemm_path"] = path
        tvm_compat.export_library(lib, str(so_path), objects)
        return so_path.read_bytes()
