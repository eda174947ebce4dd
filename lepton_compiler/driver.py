"""The one place that sequences compilation: import → simplify → layout → fuse → schedule →
codegen → plan → package. Each stage is timed and logged; ``build`` is the public entry."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from . import artifact, frontend, lowering, plan_builder, tvm_compat
from .compiled_model import CompiledModel
from .errors import CompileError, LeptonError, OptionError
from .progress import progress as progress_bar
from .target.host import resolve_host

logger = logging.getLogger(__name__)

TARGETS = ("host", "lepton")
STAGES = ("import", "simplify", "layout", "fuse", "schedule", "plan", "codegen", "package")
QUANT_STAGES = ("calibrate", "quantize")

_bar: contextvars.ContextVar[Any] = contextvars.ContextVar("lepton_build_bar", default=None)


@contextmanager
def _stage(name: str, timings: dict[str, float]):
    start = time.perf_counter()
    logger.info("stage %s ...", name)
    bar = _bar.get()
    if bar is not None:
        bar.update(0, note=name)
    try:
        yield
    except LeptonError:
        raise
    except Exception as err:
        raise CompileError(f"stage '{name}' failed: {type(err).__name__}: {err}") from err
    finally:
        timings[name] = time.perf_counter() - start
        logger.info("stage %s done in %.2fs", name, timings[name])
        if bar is not None:
            bar.update(1)


def build(
    model: Any,
    example_inputs: Sequence[Any] | None = None,
    *,
    target: str = "host",
    cpu: str | None = None,
    num_threads: int | None = None,
    spec: Any = None,
    quantize: Any = None,
    prune: Any = None,
    tuning_db: Any = None,
    limits: Any = None,
    opt_level: int = 2,
    fuse: bool = True,
    verify: bool = True,
    progress: bool | None = None,
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
        ``build_info["fallbacks"]`` says which and why (a float model runs entirely on the
        host: the matrix engine takes int8 operands, so pass ``quantize=``).
    cpu
        LLVM CPU name for the kernels (default: this machine's, e.g. ``"znver3"``). Pass a
        portable one such as ``"x86-64-v3"`` to run the artifact on other machines.
    num_threads
        Cores the kernels are scheduled for (default: the cores this process may use). The
        thread count at run time is ``LEPTON_NUM_THREADS`` (default: all online CPUs).
    spec
        The NPU spec for ``target="lepton"``: a TOML path, a dict or a ``LeptonSpec``
        (default: the bundled Lepton v1).
    quantize
        A :class:`~lepton_compiler.QuantConfig` for int8 post-training quantization
        (calibration data or a saved calibration table, method, per-channel, skip,
        overrides); ``None`` (default) keeps the model in float32. Quantized layers run as
        integer kernels — on the NPU for ``target="lepton"`` — and ``build_info
        ["quantization"]`` lists the layers kept in float with the reason.
    prune
        A :class:`~lepton_compiler.PruneConfig` (or a ratio such as ``0.5``): remove whole
        channels before quantization, kept counts aligned to the NPU tile;
        ``build_info["pruning"]`` holds the report (channels, MACs, parameters per group).
    tuning_db
        A tuning work directory (``lepton_compiler.tune(..., work_dir=)``): NPU kernels and
        host kernels whose workload it has records for use the best recorded schedule;
        ``build_info["tuned_kernels"]`` lists them (NPU kernels with the chosen plan, host
        kernels with ``"metaschedule"``).
    limits
        A :class:`~lepton_compiler.Limits`: resource limits an ONNX model is validated
        against before import (model bytes, nodes, elements per tensor, rank).
    opt_level
        ``2`` (default): the full pipeline. ``0``: the reference pipeline — no batch-norm
        folding, no layout conversion (unless quantizing), no fusion, and every host kernel
        compiled as TVM legalizes it, without Lepton's schedules; for checking the
        optimisations against (both must agree). ``1`` is the same as ``2`` today.
    fuse
        Fuse operators into kernels (default). ``False`` compiles every operator as its own
        kernel — int8 composites (conv/matmul + bias + requantize + activation) become
        chains of single-op host kernels — to check or debug what fusion does: the results
        are identical for int8 and equal to rounding for float.
    verify
        Check the IR is well formed after every stage (cheap; on by default).
    progress
        Show a progress bar over the compilation stages (default: when stderr is a terminal;
        ``LEPTON_PROGRESS=0/1`` overrides).

    Returns
    -------
    CompiledModel
        Callable with numpy arrays or torch tensors; ``.export(path)`` writes the artifact.

    Raises
    ------
    ModelLoadError, UnsupportedOperatorError, OptionError, CompileError
        All subclasses of ``LeptonError``, with a message naming the file, node or op.
    """
    if opt_level not in (0, 1, 2):
        raise OptionError(f"opt_level must be 0, 1 or 2, got {opt_level!r}")
    if opt_level == 0:
        fuse = False
    if target not in TARGETS:
        raise OptionError(f"unknown target {target!r}; available targets: {', '.join(TARGETS)}")
    if spec is not None and target != "lepton":
        raise OptionError("spec= describes the Lepton NPU; pass it with target='lepton'")
    npu = None
    if target == "lepton":
        from .target.lepton_target import resolve_lepton

        npu = resolve_lepton(spec, cpu, num_threads)  # SpecError on a bad spec, before work
    host = npu.host if npu is not None else resolve_host(cpu, num_threads)
    if prune is not None:
        from .pruning import check_config

        prune = check_config(prune)
    plans = None
    if tuning_db is not None:
        from .tuning.tuner import tuned_schedules

        # TuningError on a missing or corrupt database
        plans = tuned_schedules(tuning_db, npu.spec if npu is not None else None, host)
    stages = len(STAGES) + (len(QUANT_STAGES) if quantize is not None else 0) \
        + (prune is not None)
    # Nested builds (calibration models) draw no bar of their own.
    bar_cm = progress_bar(stages, f"compiling ({target})", progress) \
        if _bar.get() is None else nullcontext(None)
    with bar_cm as bar:
        token = _bar.set(bar) if bar is not None else None
        try:
            return _build(model, example_inputs, target, npu, host, quantize, prune, fuse,
                          verify, plans, limits, opt_level)
        finally:
            if token is not None:
                _bar.reset(token)


def _build(model: Any, example_inputs: Any, target: str, npu: Any, host: Any, quantize: Any,
           prune: Any, fuse: bool, verify: bool, plans: Any = None,
           limits: Any = None, opt_level: int = 2) -> CompiledModel:
    from . import __version__

    timings: dict[str, float] = {}
    check = lowering.check_well_formed if verify else (lambda mod, stage: None)
    imported, mod, pruned = prepare(model, example_inputs, timings, check, prune,
                                    npu.spec if npu is not None else None, limits,
                                    optimize=opt_level > 0 or quantize is not None)
    from . import placement
    from .passes.qgraph import read_graph

    relax_ops = placement.relax_op_count(mod)
    quant = None
    if quantize is not None:
        from . import quantization

        quantize = quantization.check_config(quantize)
        with _stage("calibrate", timings):
            graph, table = quantization.calibrate(mod, imported.input_names, quantize, host)
        with _stage("quantize", timings):
            quant = quantization.quantize(graph, table, quantize,
                                          spec=npu.spec if npu is not None else None,
                                          fuse=fuse)
            mod = quant.module
            check(mod, "quantize")
        ops = quant.placement
    else:
        graph = read_graph(mod["main"])
        ops = placement.place(graph, set(), npu.spec if npu is not None else None)
    built, kernels_so, npu_kernels = lower(mod, imported.input_names, imported.output_names,
                                           host, npu, timings, check,
                                           {o.layer for o in ops}, fuse, plans,
                                           schedule_host=opt_level > 0)
    report = placement.PlacementReport(target, npu.spec.name if npu is not None else None,
                                       ops, relax_ops, len(built.plan["calls"]))
    with _stage("package", timings):
        data = artifact.pack(
            plan=built.plan,
            weights=built.weights,
            kernels=kernels_so,
            target=_npu_manifest(npu, bool(npu_kernels)) if npu is not None
            else host.manifest(),
            spec_fingerprint=npu.spec.fingerprint() if npu is not None else None,
            compiler_version=__version__,
            tvm_version=tvm_compat.tvm_version(),
            report=report.to_dict(),
        )
    info = {
        "target": target,
        "source": imported.source,
        "timings_s": timings,
        "kernels": len(built.kernel_names),
        "calls": len(built.plan["calls"]),
        "arena_bytes": built.plan["arena_bytes"],
        "weights_bytes": len(built.weights),
        "placement": report.summary(),
    }
    if quant is not None:
        info["quantization"] = quant.summary()
    if pruned is not None:
        info["pruning"] = pruned.to_dict()
    if plans is not None:
        info["tuned_kernels"] = tuned_kernels(built.plan)
    if npu is not None:
        info["spec"] = npu.spec.name
        info["npu_kernels"] = sorted(npu_kernels)
        info["fallbacks"] = [{"layer": o.layer, "op": o.op, "reason": o.reason}
                             for o in report.fallbacks()]
    logger.info("built %s: %d kernels, %.1fs", target, info["kernels"], sum(timings.values()))
    return CompiledModel(data, info, quant, report)


def prepare(model: Any, example_inputs: Sequence[Any] | None,
            timings: dict[str, float] | None = None, check: Any = None, prune: Any = None,
            spec: Any = None, limits: Any = None,
            optimize: bool = True) -> tuple[Any, Any, Any]:
    """import → prune → simplify → layout: the imported model, its simplified NHWC Relax
    module and the pruning report (``None`` without ``prune``)."""
    timings = {} if timings is None else timings
    check = check or (lambda mod, stage: None)
    with _stage("import", timings):
        imported = frontend.import_model(model, example_inputs, limits)
    mod, report = imported.mod, None
    if prune is not None:
        from .pruning import prune_module
        from .target.spec import load_spec

        with _stage("prune", timings):
            result = prune_module(lowering.fold_constants(mod), prune,
                                  (spec or load_spec()).matrix.tile_n)
            mod, report = result.module, result.report
            check(mod, "prune")
    with _stage("simplify", timings):
        mod = lowering.simplify(mod, fold_batch_norm=optimize)
        check(mod, "simplify")
    with _stage("layout", timings):
        if optimize:
            mod = lowering.convert_layout(mod)
            check(mod, "layout")
    return imported, mod, report


def tuned_kernels(plan: dict) -> dict[str, Any]:
    """Tuned kernel -> the plan knobs it was scheduled with (NPU kernels) or
    ``"metaschedule"`` (host kernels scheduled from a MetaSchedule record)."""
    return {c["kernel"]: c.get("plan", "metaschedule") for c in plan["calls"] if c.get("tuned")}


def _npu_manifest(npu: Any, linked: bool) -> dict:
    from .target.npu_kernels import COUNTERS

    return {**npu.manifest(), "sim_counters": list(COUNTERS)} if linked else npu.manifest()


def compile_for_host(mod: Any, input_names: list[str], output_names: list[str], host: Any,
                     purpose: str) -> CompiledModel:
    """A Relax module compiled for the host and loaded in-process, for the compiler's own use
    (calibration and analysis models, which read intermediate tensors as extra outputs)."""
    token = _bar.set(None)  # its stages are not the user's build stages
    try:
        built, kernels_so, _ = lower(mod, input_names, output_names, host, None, {},
                                     lambda m, s: None)
    finally:
        _bar.reset(token)
    data = artifact.pack(plan=built.plan, weights=built.weights, kernels=kernels_so,
                         target=host.manifest(), spec_fingerprint=None,
                         compiler_version=purpose, tvm_version=tvm_compat.tvm_version())
    return CompiledModel(data, {"target": "host", "purpose": purpose})


def lower(mod: Any, input_names: list[str], output_names: list[str], host: Any, npu: Any,
          timings: dict[str, float], check: Any, layers: set[str] | None = None,
          fuse: bool = True, plans: Any = None,
          schedule_host: bool = True) -> tuple[Any, bytes, set[str]]:
    """fuse → schedule → plan → codegen: a Relax module to (plan, kernels.so, NPU kernels).

    ``layers``: layer names; a call whose result is bound to one records it as its source op.
    """
    from .target.host_schedule import HostScheduleConfig

    with _stage("fuse", timings):
        mod = lowering.fuse(mod, fuse)
        check(mod, "fuse")
        kernels = lowering.kernels_of(mod)
    with _stage("schedule", timings):
        mod, npu_kernels = lowering.schedule(
            mod, HostScheduleConfig() if schedule_host else None, npu, plans)
        check(mod, "schedule")
    with _stage("plan", timings):
        built = plan_builder.build_plan(mod["main"], input_names, output_names)
    used = set(built.kernel_names)  # passes may leave superseded copies of kernels behind
    npu_kernels = npu_kernels & used
    with _stage("codegen", timings):
        scheduled = {n: f for n, f in lowering.kernels_of(mod).items() if n in used}
        # The NPU instructions are linked only where a kernel uses them.
        kernels_so = lowering.codegen(scheduled, kernels, host.tvm_target(),
                                      npu if npu_kernels else None)
    for call in built.plan["calls"]:
        func = scheduled[call["kernel"]]
        var = call.pop("var", None)
        if layers and var in layers:
            call["ops"] = [var]  # the source layer, for profiles and reports
        if npu is not None and call["kernel"] in npu_kernels:
            from .target.npu_schedule import gemm_sim_static, kernel_plan

            call["sim"] = gemm_sim_static(func, npu.spec)
            call["plan"] = kernel_plan(func, npu.spec).knobs
        if func.attrs is not None and func.attrs.get("lepton.tuned"):
            call["tuned"] = True
    return built, kernels_so, npu_kernels
