"""The composer: the one place that sequences the stages. Every public entry point is a
composition of the same named stages, each a function or pass of the stage library with
explicit inputs and outputs::

    import → prune → simplify → layout                 front()      build check prune
                                                                     analyze_quantization tune
    → calibrate → quantize                             quantize_graph()  (int8 only)
    → partition                                        partition()  build check
    → fuse → schedule → plan → codegen                 lower()      build tune (to fuse)
    → package                                          build()

Stage bodies live below this module (``frontend``, ``optimize``, ``passes``, ``lower``,
``reports``, ``target``) and import nothing above them; a stage that must run a model
(calibration, the accuracy analysis) is handed an executor, :func:`compile_for_host`.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_compiler import frontend, tvm_compat
from lepton_compiler.compiled_model import CompiledModel
from lepton_compiler.errors import (
    CalibrationError,
    CompileError,
    LeptonError,
    OptionError,
    UnsupportedOperatorError,
)
from lepton_compiler.lower import artifact, lowering, plan_builder, shape_variants
from lepton_compiler.lower.cascade import plan_cascades
from lepton_compiler.optimize import accuracy_control, pruning, quantization
from lepton_compiler.options import BuildOptions
from lepton_compiler.passes.nan_semantics import PropagateNaN
from lepton_compiler.passes.qgraph import COMPUTE_KINDS, LayerGraph, read_graph
from lepton_compiler.passes.quantize import PartitionInt8, QuantizedGraph
from lepton_compiler.passes.value_guards import GuardValues, guard_sites
from lepton_compiler.progress import progress as progress_bar
from lepton_compiler.reports import placement, quant_analysis
from lepton_compiler.target.host import HostTarget, resolve_host
from lepton_compiler.target.host_schedule import HostScheduleConfig, HostThroughput
from lepton_compiler.target.lepton_target import LeptonTarget, resolve_lepton
from lepton_compiler.target.npu_kernels import COUNTERS
from lepton_compiler.target.npu_schedule import gemm_sim_static, kernel_plan
from lepton_compiler.target.npu_vector import plan_vector, vector_sim_static, work_of
from lepton_compiler.target.spec import load_spec
from lepton_compiler.tuning.schedules import tuned_schedules
from lepton_compiler.version import __version__

logger = logging.getLogger(__name__)

#: Every stage, in pipeline order (a composition runs a prefix or a subsequence of it).
STAGES = ("import", "prune", "simplify", "layout", "calibrate", "quantize", "partition", "fuse",
          "schedule", "plan", "codegen", "package")

#: A compiled model's callable for a Relax module: (module, input names, output names).
Executor = Callable[[Any, list[str], list[str]], Callable[..., Any]]

_bar: contextvars.ContextVar[Any] = contextvars.ContextVar("lepton_build_bar", default=None)


@dataclass
class Run:
    """One composition's bookkeeping: the time of each stage, IR checks between stages."""

    verify: bool = True
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str):
        """Time, log and report one stage; a non-Lepton exception becomes a CompileError."""
        assert name in STAGES, name
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
            self.timings[name] = time.perf_counter() - start
            logger.info("stage %s done in %.2fs", name, self.timings[name])
            if bar is not None:
                bar.update(1)

    def check(self, mod: Any, stage: str) -> None:
        """Well-formedness of ``mod`` after ``stage`` (when verifying)."""
        if self.verify:
            lowering.check_well_formed(mod, stage)


@dataclass
class Front:
    """What the front of the pipeline produced."""

    imported: frontend.ImportedModel
    mod: Any                       # simplified, NHWC Relax module (or pruned, imported)
    pruned: pruning.PruneResult | None = None


@dataclass
class Planned:
    """A plan with its scheduled kernels, before they are compiled (:func:`link`)."""

    plan: dict
    weights: bytes
    scheduled: dict[str, Any]      # kernel name -> scheduled prim_func
    fallback: dict[str, Any]       # kernel name -> unscheduled prim_func
    npu_kernels: set[str]
    kernel_names: list[str]


@dataclass
class Lowered:
    """What :func:`lower` produced."""

    plan: dict
    weights: bytes
    kernels_so: bytes
    npu_kernels: set[str]
    kernel_names: list[str]
    gemm_path: str | None = None   # the NPU emulation's GEMM path (npu_codegen.GEMM_PATHS)


# --- the stage sequence ----------------------------------------------------------------------

def front(model: Any, example_inputs: Sequence[Any] | None, options: BuildOptions, run: Run,
          until: str = "layout") -> Front:
    """import → prune → simplify → layout (stopping after ``until``)."""
    with run.stage("import"):
        imported = frontend.import_model(model, example_inputs, options.limits)
    result = Front(imported, imported.mod)
    if options.prune is not None:
        with run.stage("prune"):
            result.pruned = pruning.prune_module(lowering.fold_constants(result.mod),
                                                 options.prune,
                                                 load_spec(options.spec).matrix.tile_n)
            result.mod = result.pruned.module
            run.check(result.mod, "prune")
    if until == "prune":
        return result
    with run.stage("simplify"):
        result.mod = lowering.simplify(result.mod, fold_batch_norm=options.optimize)
        if options.quantize is not None:  # one GELU op: one int8 table on the NPU
            from lepton_compiler.passes.canonical_gelu import fold_erf_gelu

            result.mod = fold_erf_gelu(result.mod)
        run.check(result.mod, "simplify")
    with run.stage("layout"):
        if options.optimize:
            result.mod = lowering.convert_layout(result.mod)
            run.check(result.mod, "layout")
    return result


def quantize_graph(mod: Any, options: BuildOptions, host: HostTarget, run: Run
                   ) -> tuple[LayerGraph, quantization.CalibrationTable, QuantizedGraph]:
    """calibrate → quantize: the layer graph, its calibration table and integer plan."""
    config = options.quantize
    with run.stage("calibrate"):
        if config is not None and config.equalize:
            from lepton_compiler.passes.equalize import CrossLayerEqualization

            mod = CrossLayerEqualization()(mod)
        if config is None:  # a pre-quantized model: its QDQ pairs are the table
            graph, table = quantization.prequantized(mod)
            config = quantization.QuantConfig(table=table)
        else:
            graph, table = quantization.calibrate(mod, config,
                                                  host_executor(host, "calibration"))
    with run.stage("quantize"):
        qg = quantization.plan(graph, table, config)
        if config.bias_correction:
            qg = quantization.correct_biases(mod, graph, table, qg, config,
                                             host_executor(host, "bias correction"))
        if config.max_drop is not None:
            qg = _control_accuracy(mod, graph, table, qg, config, host)
    return graph, table, qg


def _control_accuracy(mod: Any, graph: LayerGraph, table: quantization.CalibrationTable,
                      qg: QuantizedGraph, config: quantization.QuantConfig,
                      host: HostTarget) -> QuantizedGraph:
    """Accuracy control (``max_drop``): revert the layers with the largest own error until
    the validation score is within the bound (``optimize/accuracy_control.py``)."""
    from lepton_compiler.passes.quantize import emit

    execute = host_executor(host, "accuracy control")
    inputs, outputs = list(graph.inputs), list(graph.outputs)
    samples = [quantization.sample_dict(s, graph, f"calibration sample {i}")
               for i, s in enumerate(config.calibration_data or [])][:8]
    if samples:
        report = quant_analysis.analyze(mod, graph, table, qg, samples,
                                        host_executor(host, "analysis"))
        ranking = [r.layer for r in sorted(report.layers,
                                           key=lambda r: (r.isolated_sqnr_db, r.layer))]
    else:  # a table without samples: latest layers first (no error estimate to rank by)
        ranking = [lay.name for lay in reversed(graph.layers) if lay.name in qg.quantized
                   and lay.kind in COMPUTE_KINDS]
    chosen, measured = accuracy_control.control(
        lambda reverted: quantization.plan(graph, table, config, reverted),
        lambda plan: execute(emit(plan), inputs, outputs),
        execute(mod, inputs, outputs), ranking, config.validation, float(config.max_drop),
        config.progress)
    chosen.accuracy = measured.to_dict()
    logger.info("accuracy control: float %.4f, int8 %.4f -> %.4f with %d layer(s) in float",
                measured.float_metric, measured.int8_metric, measured.final_metric,
                len(measured.reverted))
    return chosen


def partition(mod: Any, graph: LayerGraph, qg: QuantizedGraph | None,
              npu: LeptonTarget | None, host: HostTarget, options: BuildOptions, run: Run
              ) -> tuple[list[placement.OpPlacement], Any]:
    """Place every layer of ``mod`` (read as ``graph``) on the NPU or the host (a host
    fallback priced for ``host``); an int8 plan turns ``mod`` into its quantized module with
    the NPU kernels marked (pass ``lepton.PartitionInt8``; ``None`` for a float graph, which
    keeps its module)."""
    with run.stage("partition"):
        ops = placement.place(graph, qg.quantized if qg is not None else set(),
                              npu.spec if npu is not None else None,
                              HostThroughput.for_host(host), fused=options.fuse)
        if qg is None:
            return ops, None
        mod = PartitionInt8(qg, {o.layer for o in ops if o.unit == "npu"}, options.fuse)(mod)
        run.check(mod, "partition")
    return ops, mod


def lower(mod: Any, input_names: list[str], output_names: list[str], host: HostTarget,
          npu: LeptonTarget | None, run: Run, layers: set[str] | None = None,
          fuse: bool = True, tuned: Any = None, schedule_host: bool = True,
          node_names: dict[str, list[str]] | None = None, source: str = "onnx",
          pinned: dict[str, Any] | None = None) -> Lowered:
    """fuse → schedule → plan → codegen: a Relax module to a plan and one kernel library
    (:func:`plan_kernels`, then :func:`link`)."""
    planned = plan_kernels(mod, input_names, output_names, host, npu, run, layers, fuse,
                           tuned, schedule_host, node_names, source, pinned)
    with run.stage("codegen"):
        kernels_so, gemm_path = link([planned], host, npu)
    return Lowered(planned.plan, planned.weights, kernels_so, planned.npu_kernels,
                   planned.kernel_names, gemm_path)


def plan_kernels(mod: Any, input_names: list[str], output_names: list[str], host: HostTarget,
                 npu: LeptonTarget | None, run: Run, layers: set[str] | None = None,
                 fuse: bool = True, tuned: Any = None, schedule_host: bool = True,
                 node_names: dict[str, list[str]] | None = None, source: str = "onnx",
                 pinned: dict[str, Any] | None = None,
                 cascade: bool | dict[tuple[int, int], tuple[str, ...]] = False) -> Planned:
    """fuse → schedule → plan: a Relax module to a plan and its scheduled kernels.

    ``layers``: layer names; a call whose result is bound to one records it as its source op.
    Every value an operator trusts (indices, integer divisors) is guarded first
    (``lepton.GuardValues``; ``node_names`` names the model's nodes in its run-time errors;
    ``source`` "torch": negative indices are invalid, as in PyTorch), and float clamps keep
    NaN (``lepton.PropagateNaN``). ``pinned``: inputs fixed at build time (name -> value),
    checked by the runtime at every call. ``cascade``: keep activations between consecutive
    NPU layers in SRAM where they fit (``lower/cascade.py``; the plan's ``cascades``); with a
    tuning database in ``tuned``, GEMM layers may be replanned to make room, and the build
    runs again with those plans (``cascade`` then maps the call pairs to cascade to the layers
    replanned for them).
    """
    unfused = mod
    with run.stage("fuse"):
        mod = lowering.fuse(safe_semantics(mod, node_names, source), fuse)
        run.check(mod, "fuse")
        kernels = lowering.kernels_of(mod)
    with run.stage("schedule"):
        config = HostScheduleConfig.for_host(host) if schedule_host else None
        mod, npu_kernels = lowering.schedule(mod, config, npu, tuned)
        run.check(mod, "schedule")
    with run.stage("plan"):
        built = plan_builder.build_plan(mod["main"], input_names, output_names,
                                        guard_sites(lowering.kernels_of(mod)), pinned)
    used = set(built.kernel_names)  # passes may leave superseded copies of kernels behind
    npu_kernels = npu_kernels & used
    scheduled = {n: f for n, f in lowering.kernels_of(mod).items() if n in used}
    plan_builder.check_signatures(built.plan, scheduled)
    for call in built.plan["calls"]:
        func = scheduled[call["kernel"]]
        var = call.pop("var", None)
        if layers and var in layers:
            call["ops"] = [var]  # the source layer, for profiles and reports
        work = work_of(func)
        if npu is not None and call["kernel"] in npu_kernels and work is not None:
            vector = plan_vector(work, npu.spec)
            call["sim"] = vector_sim_static(vector, npu.spec)
            call["plan"] = {"band": vector.band}
        elif npu is not None and call["kernel"] in npu_kernels:
            call["sim"] = gemm_sim_static(func, npu.spec)
            call["plan"] = kernel_plan(func, npu.spec).knobs
        if func.attrs is not None and func.attrs.get("lepton.tuned"):
            call["tuned"] = True
    if npu is not None and cascade:
        costs = _cascade_costs(built.plan, scheduled, npu.spec, tuned)
        found = plan_cascades(built.plan, npu.spec, costs,
                              None if cascade is True else cascade)
        if costs is not None and costs.overrides:
            # The cascades chose other plans for some GEMM layers: schedule them so.
            tuned.overrides.update(costs.overrides)
            pairs = {(c.producer_call, c.producer_call + 1): c.replanned for c in found}
            return plan_kernels(unfused, input_names, output_names, host, npu, run, layers, fuse,
                                tuned, schedule_host, node_names, source, pinned, pairs)
        built.plan["cascades"] = [c.to_dict() for c in found]
    return Planned(built.plan, built.weights, scheduled, kernels, npu_kernels,
                   built.kernel_names)


def _cascade_costs(plan: dict, scheduled: dict[str, Any], spec: Any, tuned: Any) -> Any:
    """The tuning records the cascade planner may replan GEMM layers from (None without a
    tuning database)."""
    if tuned is None or getattr(tuned, "database", None) is None:
        return None
    from lepton_compiler.lower.cascade import CascadeCosts
    from lepton_compiler.target.npu_schedule import gemm_extents, kernel_plan
    from lepton_compiler.target.qkernels import GEMM_ATTR
    from lepton_compiler.tuning.measure import workload_key

    costs = CascadeCosts(tuned.database, spec, {}, {}, {})
    for i, call in enumerate(plan["calls"]):
        func = scheduled[call["kernel"]]
        if "sim" in call and func.attrs is not None and func.attrs.get(GEMM_ATTR):
            costs.workloads[i] = workload_key(func, spec)
            costs.extents[i] = gemm_extents(func)
            costs.knobs[i] = kernel_plan(func, spec).knobs
    return costs


def link(parts: list[Planned], host: HostTarget, npu: LeptonTarget | None
         ) -> tuple[bytes, str | None]:
    """Compile the kernels of one or more plans into one library: the library's bytes and
    the NPU emulation's GEMM path (None when no kernel links the NPU instructions)."""
    from lepton_compiler.target.npu_fast import FAST_ATTR

    scheduled = {n: f for p in parts for n, f in p.scheduled.items()}
    fallback = {n: f for p in parts for n, f in p.fallback.items()}
    # The NPU instructions are linked only where a kernel uses them (NPU kernels, and host
    # depthwise kernels that call its whole-layer code).
    from lepton_compiler.target.npu_vector import BOTH_MODES

    calls_c = any((f.attrs is not None and FAST_ATTR in f.attrs)
                  or getattr(work_of(f), "op", None) in BOTH_MODES for f in scheduled.values())
    linked = any(p.npu_kernels for p in parts) or calls_c
    if linked and npu is None:  # a host build whose int8 kernels call the NPU library's code
        npu = LeptonTarget(load_spec(), host)
    built_with: dict = {}
    kernels_so = lowering.codegen(scheduled, fallback, host.tvm_target(),
                                  npu if linked else None, built_with)
    return kernels_so, built_with.get("gemm_path")


# --- compositions ----------------------------------------------------------------------------

def resolve_targets(options: BuildOptions) -> tuple[LeptonTarget | None, HostTarget]:
    """The NPU target (``target="lepton"``; SpecError on a bad spec) and the host CPU."""
    if options.target == "lepton":
        npu = resolve_lepton(options.spec, options.cpu, options.num_threads)
        return npu, npu.host
    return None, resolve_host(options.cpu, options.num_threads)


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
    cascade: bool = True,
    verify: bool = True,
    progress: bool | None = None,
    shapes: Sequence[Any] | None = None,
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
    cascade
        With ``target="lepton"``: keep an activation in the NPU's SRAM from the layer that
        writes it to the one layer that reads it, where it fits beside both layers' working
        sets (default). ``compiled.report.cascades`` lists them (layers, bytes kept, SRAM in
        use); the sim profile counts their transfers as ``onchip_bytes``, not DRAM bytes.
        The results are identical either way.
    verify
        Check the IR is well formed after every stage (cheap; on by default).
    progress
        Show a progress bar over the compilation stages (default: when stderr is a terminal;
        ``LEPTON_PROGRESS=0/1`` overrides).
    shapes
        Compile one artifact for several input shapes: a list of shape sets, each a list of
        shapes (one per input) or a mapping input name -> shape, e.g. ``[{"input_ids": (1,
        32)}, {"input_ids": (4, 128)}]`` (inputs left out keep the example's shape). Each set
        gets its own plan, identical to a build at that shape; the weights are stored once;
        a call picks the plan by its inputs' shapes, and any other shape is refused with an
        ``InputError`` listing the compiled ones. Float models only for now.

    Returns
    -------
    CompiledModel
        Callable with numpy arrays or torch tensors; ``.export(path)`` writes the artifact.

    Raises
    ------
    ModelLoadError, UnsupportedOperatorError, OptionError, CompileError
        All subclasses of ``LeptonError``, with a message naming the file, node or op.
    """
    options = BuildOptions.create(
        target=target, cpu=cpu, num_threads=num_threads, spec=spec, quantize=quantize,
        prune=prune, tuning_db=tuning_db, limits=limits, opt_level=opt_level, fuse=fuse,
        cascade=cascade, verify=verify, progress=progress)
    npu, host = resolve_targets(options)
    tuned = None
    if options.tuning_db is not None:  # TuningError on a missing or corrupt database
        tuned = tuned_schedules(options.tuning_db, npu.spec if npu is not None else None, host)
    count = len(STAGES) - 2 * (options.quantize is None) - (options.prune is None)
    # Nested builds (calibration models) draw no bar of their own.
    bar_cm = progress_bar(count, f"compiling ({options.target})", options.progress) \
        if _bar.get() is None else nullcontext(None)
    with bar_cm as bar:
        token = _bar.set(bar) if bar is not None else None
        try:
            return _build(model, example_inputs, options, npu, host, tuned, shapes)
        finally:
            if token is not None:
                _bar.reset(token)


@dataclass
class _Variant:
    """One input-shape set of a build, planned (kernels not compiled yet)."""

    head: Front
    ops: list[placement.OpPlacement]
    relax_ops: int
    mod: Any
    planned: Planned
    qg: QuantizedGraph | None = None
    table: Any = None


def _build(model: Any, example_inputs: Any, options: BuildOptions, npu: LeptonTarget | None,
           host: HostTarget, tuned: Any, shapes: Any = None) -> CompiledModel:
    run = Run(options.verify)
    examples = [example_inputs] if shapes is None else \
        shape_variants.examples(model, example_inputs, shapes)
    if len(examples) > 1 and options.quantize is not None:
        raise OptionError("shapes= builds float models only for now; build a quantized "
                          "model once per input shape")
    variants = [_plan_variant(model, ex, options, npu, host, tuned, run) for ex in examples]
    first = variants[0]
    plan, weights, parts = shape_variants.combine([v.planned for v in variants])
    npu_kernels = set().union(*(p.npu_kernels for p in parts))
    with run.stage("codegen"):
        kernels_so, gemm_path = link(parts, host, npu)
    report = placement.PlacementReport(options.target, npu.spec.name if npu else None,
                                       first.ops, first.relax_ops,
                                       len(first.planned.plan["calls"]),
                                       cascades=list(first.planned.plan.get("cascades", [])))
    with run.stage("package"):
        data = artifact.pack(
            plan=plan, weights=weights, kernels=kernels_so,
            target=_target_manifest(npu, host, bool(npu_kernels), gemm_path),
            spec_fingerprint=npu.spec.fingerprint() if npu is not None else None,
            compiler_version=__version__, tvm_version=tvm_compat.tvm_version(),
            report=report.to_dict())
    imported = first.head.imported
    info: dict[str, Any] = {
        "target": options.target,
        "source": imported.source,
        "timings_s": run.timings,
        "kernels": sum(len(p.kernel_names) for p in parts),
        "calls": len(first.planned.plan["calls"]),
        "arena_bytes": max(v.planned.plan["arena_bytes"] for v in variants),
        "weights_bytes": len(weights),
        "placement": report.summary(),
    }
    if len(variants) > 1:
        info["shapes"] = [{name: list(np.shape(a)) for name, a in
                           zip(imported.input_names, ex, strict=True)} for ex in examples]
    quant = None
    if first.qg is not None:
        quant = quantization.QuantizationResult(first.mod, first.qg, first.table, first.ops)
        info["quantization"] = quant.summary()
    if first.head.pruned is not None:
        info["pruning"] = first.head.pruned.report.to_dict()
    if tuned is not None:
        info["tuned_kernels"] = tuned_kernels(first.planned.plan)
    if npu is not None:
        info["spec"] = npu.spec.name
        info["npu_kernels"] = sorted(npu_kernels)
        info["fallbacks"] = [{"layer": o.layer, "op": o.op, "reason": o.reason}
                             for o in report.fallbacks()]
    logger.info("built %s: %d kernels, %.1fs", options.target, info["kernels"],
                sum(run.timings.values()))
    return CompiledModel(data, info, quant, report)


def _plan_variant(model: Any, example_inputs: Any, options: BuildOptions,
                  npu: LeptonTarget | None, host: HostTarget, tuned: Any, run: Run) -> _Variant:
    """import → ... → plan for one set of input shapes."""
    head = front(model, example_inputs, options, run)
    imported, mod = head.imported, head.mod
    relax_ops = placement.relax_op_count(mod)
    graph, table, qg = read_graph(mod["main"]), None, None
    if options.quantize is not None or (graph.fixed and npu is not None):
        # A pre-quantized model (QuantizeLinear/DequantizeLinear pairs) compiles to int8
        # layers with its own scales for the Lepton target, without calibration data.
        graph, table, qg = quantize_graph(mod, options, host, run)
    ops, int8_mod = partition(mod, graph, qg, npu, host, options, run)
    mod = int8_mod if int8_mod is not None else mod
    planned = plan_kernels(mod, imported.input_names, imported.output_names, host, npu, run,
                           {o.layer for o in ops}, options.fuse, tuned,
                           schedule_host=options.opt_level > 0,
                           node_names=imported.node_names, source=imported.source,
                           pinned=imported.pinned, cascade=options.cascade)
    return _Variant(head, ops, relax_ops, mod, planned, qg, table)


def check(model: Any, example_inputs: Sequence[Any] | None = None, *, target: str = "lepton",
          spec: Any = None, quantize: bool = True) -> placement.PlacementReport:
    """Pre-flight placement check: what would run where, and why, without compiling.

    Imports and simplifies the model and applies the offload rules to every layer, assuming
    an int8 build (``quantize=False``: a float32 build). Operators that cannot be imported at
    all are listed under ``unsupported`` (with their nodes) instead of raising, so one call
    shows everything that stands between the model and the NPU.
    """
    options = BuildOptions.create(target=target, spec=spec if target == "lepton" else None)
    npu_spec = load_spec(spec) if target == "lepton" else None
    name = npu_spec.name if npu_spec is not None else None
    run = Run(verify=False)
    try:
        head = front(model, example_inputs, options, run)
    except UnsupportedOperatorError as err:
        return placement.PlacementReport(target, name, [], 0, None,
                                         {op: list(nodes) for op, nodes in err.ops.items()},
                                         dict(err.reasons))
    graph = read_graph(head.mod["main"])
    quantized = placement.would_quantize(graph) if quantize else set()
    with run.stage("partition"):
        ops = placement.place(graph, quantized, npu_spec,
                              HostThroughput.for_host(resolve_host(options.cpu)))
    return placement.PlacementReport(target, name, ops, placement.relax_op_count(head.mod))


def analyze_quantization(model: Any, example_inputs: Sequence[Any] | None = None, *,
                         quantize: Any, data: Iterable[Any] | None = None,
                         cpu: str | None = None) -> quant_analysis.QuantReport:
    """Per-layer SQNR and cosine similarity of int8 vs float.

    Parameters
    ----------
    model, example_inputs
        As for :func:`lepton_compiler.build`.
    quantize
        The :class:`~lepton_compiler.QuantConfig` to analyse.
    data
        Samples to measure on (same forms as calibration data); default: the calibration
        data (held-out data gives the honest figures).
    cpu
        LLVM CPU name the analysis models are compiled for (default: this machine's).

    See :mod:`lepton_compiler.reports.quant_analysis` for what the figures mean.
    """
    options = BuildOptions.create(quantize=quantize, cpu=cpu)
    samples_src = data if data is not None else options.quantize.calibration_data
    if samples_src is None:
        raise OptionError("analyze_quantization needs data= when the config has only a table")
    _, host = resolve_targets(options)
    run = Run(verify=False)
    head = front(model, example_inputs, options, run)
    graph, table, qg = quantize_graph(head.mod, options, host, run)
    samples = [quantization.sample_dict(s, graph, f"analysis sample {i}")
               for i, s in enumerate(samples_src)]
    if not samples:
        raise CalibrationError("the analysis data is empty")
    return quant_analysis.analyze(head.mod, graph, table, qg, samples,
                                  host_executor(host, "analysis"))



def prune(model: Any, example_inputs: Sequence[Any] | None, config: Any = None,
          spec: Any = None, sim: bool = False, quantize: Any = None) -> pruning.PruneResult:
    """Prune a torch module or ONNX model; returns the pruned Relax module and the report.

    Parameters
    ----------
    model, example_inputs
        As for :func:`lepton_compiler.build`.
    config
        A :class:`PruneConfig` or a ratio (default ``PruneConfig()``: 0.5, L1, tile-aligned).
    spec
        The Lepton spec whose tile ``align`` defaults to (the bundled v1 unless given).
    sim
        Also build the model int8 for the Lepton target before and after pruning and run
        each once in sim mode: ``report.sim_cycles_before/after``.
    quantize
        The :class:`~lepton_compiler.QuantConfig` for ``sim`` (default: calibrate on
        ``example_inputs``).

    Returns
    -------
    PruneResult
        ``module`` (what ``build(..., prune=config)`` compiles), ``report`` and ``kept``.
    """
    config = pruning.check_config(pruning.PruneConfig() if config is None else config)
    options = BuildOptions(prune=config, spec=spec)
    result = front(model, example_inputs, options, Run(verify=False), until="prune").pruned
    if sim:
        before, after = (_sim_cycles(model, example_inputs, p, spec, quantize)
                         for p in (None, config))
        result.report.sim_cycles_before, result.report.sim_cycles_after = before, after
    return result


def _sim_cycles(model: Any, example_inputs: Any, config: Any, spec: Any,
                quantize: Any) -> int:
    """NPU cycles of one sim-mode run of the model built int8 for the Lepton target."""
    import tempfile

    import lepton_runtime

    if example_inputs is None:
        raise OptionError("prune(..., sim=True) needs example_inputs to run the model")
    quantize = quantize or quantization.QuantConfig(calibration_data=[tuple(example_inputs)])
    compiled = build(model, example_inputs, target="lepton", spec=spec, quantize=quantize,
                     prune=config)
    with tempfile.TemporaryDirectory() as tmp:
        path = compiled.export(f"{tmp}/model.lepton")
        return lepton_runtime.load(path, mode="sim").profile(*example_inputs).total_cycles


def fused_module(model: Any, example_inputs: Any, quantize: Any, npu: LeptonTarget | None,
                 host: HostTarget) -> Any:
    """The model's fused Relax module as ``build`` schedules it (quantized when ``quantize``
    is given), with constant weights marked layout-free: what tuning extracts tasks from."""
    from tvm import relax

    options = BuildOptions.create(quantize=quantize, target="lepton" if npu else "host",
                                  spec=npu.spec if npu is not None else None)
    run = Run(verify=False)
    head = front(model, example_inputs, options, run)
    mod = head.mod
    if options.quantize is not None:
        graph, _, qg = quantize_graph(mod, options, host, run)
        mod = partition(mod, graph, qg, npu, host, options, run)[1]
    with run.stage("fuse"):
        mod = lowering.fuse(safe_semantics(mod, head.imported.node_names,
                                           head.imported.source), True)
    return relax.transform.AttachAttrLayoutFreeBuffers()(mod)


def safe_semantics(mod: Any, node_names: dict[str, list[str]] | None = None,
                   source: str = "onnx") -> Any:
    """What every lowering starts with, so tuned and built kernels are the same: guards on
    the values operators trust (``lepton.GuardValues``) and clamps that keep NaN
    (``lepton.PropagateNaN``)."""
    mod = GuardValues(node_names, negative_indices=source != "torch")(mod)
    return PropagateNaN()(mod)


# --- helpers ---------------------------------------------------------------------------------

def compile_for_host(mod: Any, input_names: list[str], output_names: list[str],
                     host: HostTarget, purpose: str) -> CompiledModel:
    """A Relax module compiled for the host and loaded in-process, for the compiler's own use
    (calibration and analysis models, which read intermediate tensors as extra outputs)."""
    token = _bar.set(None)  # its stages are not the user's build stages
    try:
        lowered = lower(mod, input_names, output_names, host, None, Run(verify=False),
                        schedule_host=True)
    finally:
        _bar.reset(token)
    data = artifact.pack(plan=lowered.plan, weights=lowered.weights,
                         kernels=lowered.kernels_so, target=host.manifest(),
                         spec_fingerprint=None, compiler_version=purpose,
                         tvm_version=tvm_compat.tvm_version())
    return CompiledModel(data, {"target": "host", "purpose": purpose})


def host_executor(host: HostTarget, purpose: str) -> Executor:
    """The executor handed to stages that run a model: compile for ``host``, load, call."""
    def execute(mod: Any, input_names: list[str], output_names: list[str]) -> CompiledModel:
        return compile_for_host(mod, input_names, output_names, host, purpose)

    return execute


def tuned_kernels(plan: dict) -> dict[str, Any]:
    """Tuned kernel -> the plan knobs it was scheduled with (NPU kernels) or
    ``"metaschedule"`` (host kernels scheduled from a MetaSchedule record)."""
    return {c["kernel"]: c.get("plan", "metaschedule") for c in plan["calls"] if c.get("tuned")}


def _target_manifest(npu: LeptonTarget | None, host: HostTarget, linked: bool,
                     gemm_path: str | None = None) -> dict:
    if npu is None:
        return host.manifest()
    if not linked:
        return npu.manifest()
    return {**npu.manifest(), "sim_counters": list(COUNTERS), "gemm_path": gemm_path}
