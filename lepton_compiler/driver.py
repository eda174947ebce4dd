"""The one place that sequences compilation: import → simplify → layout → fuse → schedule →
codegen → plan → package. Each stage is timed and logged; ``build`` is the public entry."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

from . import artifact, frontend, lowering, plan_builder, tvm_compat
from .compiled_model import CompiledModel
from .errors import CompileError, LeptonError, OptionError

logger = logging.getLogger(__name__)

TARGETS = ("host", "lepton")


@contextmanager
def _stage(name: str, timings: dict[str, float]):
    start = time.perf_counter()
    logger.info("stage %s ...", name)
    try:
        yield
    except LeptonError:
        raise
    except Exception as err:
        raise CompileError(f"stage '{name}' failed: {type(err).__name__}: {err}") from err
    finally:
        timings[name] = time.perf_counter() - start
        logger.info("stage %s done in %.2fs", name, timings[name])


def build(
    model: Any,
    example_inputs: Sequence[Any] | None = None,
    *,
    target: str = "host",
    cpu: str | None = None,
    num_threads: int | None = None,
    spec: Any = None,
    verify: bool = True,
) -> CompiledModel:
    """Compile a model ahead of time.

    Parameters
    ----------
    model
        A ``torch.nn.Module``, an ONNX file path, ONNX bytes or an ``onnx.ModelProto``.
    example_inputs
        Inputs used to trace a torch module (tensors or numpy arrays, one per ``forward``
        argument); for ONNX they fix dynamic input shapes and may be omitted otherwise.
    target
        ``"host"``: fp32 kernels for this machine's CPU. ``"lepton"``: the Lepton NPU; ops the
        NPU cannot run fall back to host kernels in the same artifact, and
        ``build_info["fallbacks"]`` says which and why (until quantization lands, a float
        model runs entirely on the host: the matrix engine takes int8 operands).
    cpu
        LLVM CPU name for the kernels (default: this machine's, e.g. ``"znver3"``). Pass a
        portable one such as ``"x86-64-v3"`` to run the artifact on other machines.
    num_threads
        Cores the kernels are scheduled for (default: the cores this process may use). The
        thread count at run time is ``LEPTON_NUM_THREADS`` (default: all online CPUs).
    spec
        The NPU spec for ``target="lepton"``: a TOML path, a dict or a ``LeptonSpec``
        (default: the bundled Lepton v1).
    verify
        Check the IR is well formed after every stage (cheap; on by default).

    Returns
    -------
    CompiledModel
        Callable with numpy arrays or torch tensors; ``.export(path)`` writes the artifact.

    Raises
    ------
    ModelLoadError, UnsupportedOperatorError, OptionError, CompileError
        All subclasses of ``LeptonError``, with a message naming the file, node or op.
    """
    from . import __version__
    from .target.host import resolve_host
    from .target.host_schedule import HostScheduleConfig

    if target not in TARGETS:
        raise OptionError(f"unknown target {target!r}; available targets: {', '.join(TARGETS)}")
    if spec is not None and target != "lepton":
        raise OptionError("spec= describes the Lepton NPU; pass it with target='lepton'")
    npu = None
    if target == "lepton":
        from .target.lepton_target import resolve_lepton

        npu = resolve_lepton(spec, cpu, num_threads)  # SpecError on a bad spec, before work
    timings: dict[str, float] = {}
    with _stage("import", timings):
        imported = frontend.import_model(model, example_inputs)
    check = lowering.check_well_formed if verify else (lambda mod, stage: None)
    with _stage("simplify", timings):
        mod = lowering.simplify(imported.mod)
        check(mod, "simplify")
    with _stage("layout", timings):
        mod = lowering.convert_layout(mod)
        check(mod, "layout")
    with _stage("fuse", timings):
        mod = lowering.fuse(mod)
        check(mod, "fuse")
        kernels = lowering.kernels_of(mod)
    with _stage("schedule", timings):
        host = npu.host if npu is not None else resolve_host(cpu, num_threads)
        mod = lowering.schedule(mod, HostScheduleConfig())
        check(mod, "schedule")
    with _stage("codegen", timings):
        kernels_so = lowering.codegen(lowering.kernels_of(mod), kernels, host.tvm_target())
    with _stage("plan", timings):
        built = plan_builder.build_plan(mod["main"], imported.input_names,
                                        imported.output_names)
    with _stage("package", timings):
        data = artifact.pack(
            plan=built.plan,
            weights=built.weights,
            kernels=kernels_so,
            target=npu.manifest() if npu is not None else host.manifest(),
            spec_fingerprint=npu.spec.fingerprint() if npu is not None else None,
            compiler_version=__version__,
            tvm_version=tvm_compat.tvm_version(),
        )
    info = {
        "target": target,
        "source": imported.source,
        "timings_s": timings,
        "kernels": len(built.kernel_names),
        "calls": len(built.plan["calls"]),
        "arena_bytes": built.plan["arena_bytes"],
        "weights_bytes": len(built.weights),
    }
    if npu is not None:
        from .target.npu_constraints import int8_operands

        # Until quantization lands every kernel of a float model is float: the int8 rule's
        # own text is the reason.
        reason = " ".join((int8_operands.__doc__ or "").split()) + " Quantize the model."
        info["spec"] = npu.spec.name
        info["fallbacks"] = [{"kernel": name, "reason": reason} for name in built.kernel_names]
    logger.info("built %s: %d kernels, %.1fs", target, info["kernels"], sum(timings.values()))
    return CompiledModel(data, info)
