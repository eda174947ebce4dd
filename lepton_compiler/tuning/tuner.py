"""Tuning sessions: search the NPU schedule space of a model's GEMM kernels.

    session = lepton_compiler.tune(model, example_inputs, quantize=config, work_dir="tune/",
                                   trials=200, runner="sim")
    print(session.summary())
    compiled = lepton_compiler.build(model, example_inputs, target="lepton",
                                     quantize=config, tuning_db="tune/")

Tasks are the distinct GEMM workloads of the quantized model (conv2d/dense/matmul kernels the
NPU runs). Each task's space is every plan that fits the spec's SRAM
(``target.npu_schedule.candidate_plans``: K block depth, stationary weights, row strips per
weight strip); candidates that would overflow SRAM are pruned before anything is measured.
With the ``sim`` runner the space also holds the cascade choices (:func:`cascade_candidates`):
the kernel measured with its input, its output or both held in SRAM, each with the plans that
fit beside them; ``build(..., tuning_db=)`` then takes a cascade whose measured cycles beat the
uncascaded plans (``lower/cascade.py``).
The default plan is measured first, then each cascade choice's default plan, then the rest in
an order drawn from ``seed``; with the ``sim`` runner costs are simulated cycles, so the same
seed gives the same records. Every
measurement is appended to the database before the next starts; a resumed session skips
what is recorded. Tasks are visited round-robin until ``trials`` measurements, the
``time_budget`` or every space is exhausted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton_compiler.errors import OptionError
from lepton_compiler.progress import progress
from lepton_compiler.tuning.database import Database, knob_key
from lepton_compiler.tuning.measure import RESIDENCY, LocalRunner, resident_bytes, workload_key

logger = logging.getLogger(__name__)

RUNNERS = ("sim", "host")


@dataclass
class Task:
    """One distinct GEMM workload of the model."""

    workload: str
    kernels: list[str]
    func: Any
    default: dict[str, Any]
    candidates: list[dict[str, Any]]


@dataclass
class TuningSession:
    """The result of :func:`tune`: the database and a per-task summary."""

    work_dir: str
    tasks: list[Task]
    database: Database
    unit: str
    trials_run: int = 0
    host_trials_run: int = 0
    seconds: float = 0.0
    stopped: str = ""

    def summary(self) -> str:
        """Per task: space, trials, failures, default and best cost, speed-up."""
        return summarize(self.database, self.tasks, self.unit)


def summarize(db: Database, tasks: Sequence[Task] | None, unit: str = "") -> str:
    """A per-task table from the database (all its workloads when ``tasks`` is None)."""
    rows = []
    workloads = [t.workload for t in tasks] if tasks is not None else list(db.workloads())
    if tasks is not None:  # host kernels tuned with MetaSchedule
        workloads += [w for w in db.workloads() if w.startswith("host/")]
    for w in workloads:
        records = db.for_workload(w)
        default = next((r for r in records if r.get("default") and r["status"] == "ok"), None)
        best = db.best(w)
        task = next((t for t in tasks or [] if t.workload == w), None)
        space = len(task.candidates) if task else "?"
        failed = sum(r["status"] != "ok" for r in records)
        row_unit = records[0].get("unit", unit) if records else unit
        d = default["cost"] if default else None
        b = best["cost"] if best else None
        speed = f"{d / b:.2f}x" if d and b else "-"
        name = next((f"{r['kernel']} (host)" for r in records if "kernel" in r),
                    w.rsplit("/", 1)[0])
        rows.append(f"{name:<40}{space!s:>6}{len(records):>7}{failed:>7}"
                    f"{_cost(d, row_unit):>14}{_cost(b, row_unit):>14}{speed:>8}")
    head = (f"{'workload':<40}{'space':>6}{'trials':>7}{'failed':>7}{'default':>14}"
            f"{'best':>14}{'gain':>8}")
    return "\n".join([head, *rows])


def _cost(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.3f} ms" if unit == "seconds" else f"{value:,.0f}"


def extract_tasks(model: Any, example_inputs: Any, quantize: Any, spec: Any = None,
                  cpu: str | None = None, target: str = "lepton"
                  ) -> tuple[list[Task], Any, dict[str, Any], Any]:
    """The distinct NPU GEMM workloads (target ``lepton``) and the host kernels of the model:
    (NPU tasks, NPU spec or None, host kernels by name, host target)."""
    import tvm

    from lepton_compiler.lower import lowering
    from lepton_compiler.passes.value_guards import is_guard
    from lepton_compiler.pipeline import fused_module
    from lepton_compiler.target.host import resolve_host
    from lepton_compiler.target.lepton_target import resolve_lepton
    from lepton_compiler.target.npu_schedule import gemm_extents, plan_gemm
    from lepton_compiler.target.qkernels import GEMM_ATTR

    npu = resolve_lepton(spec, cpu) if target == "lepton" else None
    host = npu.host if npu is not None else resolve_host(cpu)
    fused = fused_module(model, example_inputs, quantize, npu, host)
    tasks: dict[str, Task] = {}
    host_kernels: dict[str, Any] = {}
    for name, func in lowering.kernels_of(fused).items():
        if is_guard(func):
            continue  # guards are not scheduled, so there is nothing to tune
        if npu is None or func.attrs is None or not func.attrs.get(GEMM_ATTR):
            host_kernels[name] = func
            continue
        key = workload_key(func, npu.spec)
        if key in tasks:
            tasks[key].kernels.append(name)
            continue
        tasks[key] = Task(key, [name], tvm.ir.save_json(func),
                          plan_gemm(*gemm_extents(func), npu.spec).knobs,
                          cascade_candidates(func, npu.spec))
    return list(tasks.values()), npu.spec if npu is not None else None, host_kernels, \
        host.tvm_target()


def cascade_candidates(func: Any, spec: Any) -> list[dict[str, Any]]:
    """A GEMM kernel's search space: every plan that fits the SRAM (``candidate_plans``),
    under every cascade choice of :data:`~lepton_compiler.tuning.measure.RESIDENCY` whose
    resident activations leave room for one: holding an activation in the input SRAM takes
    room from the plan's staged strips, so a cascade may need a shallower plan."""
    from lepton_compiler.target.npu_schedule import candidate_plans, gemm_extents, plan_gemm

    extents = gemm_extents(func)
    found = []
    for resident in RESIDENCY:
        held = resident_bytes(func, resident)
        if held >= spec.sram.input_bytes:
            continue
        extra = {"resident": list(resident)} if resident else {}
        plans = candidate_plans(*extents, spec, input_reserved=held)
        if plans:  # this choice's default plan first, then the rest of its space
            first = plan_gemm(*extents, spec, input_reserved=held)
            found += [{**p.knobs, **extra} for p in [first, *(p for p in plans if p != first)]]
    return found


def tune(model: Any, example_inputs: Sequence[Any] | None, *, target: str = "lepton",
         quantize: Any = None, work_dir: str = "tune", trials: int = 2000,
         time_budget: float | None = None, seed: int = 0, runner: Any = "sim",
         host_trials: int | None = None, spec: Any = None, cpu: str | None = None,
         timeout: float = 120.0, progress_bar: bool | None = None) -> TuningSession:
    """Tune a model's kernel schedules; records go to ``work_dir``.

    NPU GEMM kernels (target ``lepton``) are searched over Lepton's plan space; host
    kernels (everything on the CPU: the whole model for target ``host``, the fallback
    operators for ``lepton``) with TVM's MetaSchedule and its CPU rules.

    Parameters
    ----------
    model, example_inputs, quantize
        As for :func:`~lepton_compiler.build` (``quantize`` is required for ``lepton``: the
        NPU runs int8; optional for ``host``).
    target
        ``"lepton"`` or ``"host"``.
    work_dir
        The database folder (``records.jsonl``); an existing one is resumed.
    trials
        NPU measurements to make in this session (target ``host``: MetaSchedule trials);
        records already in the database are reused, not re-measured.
    time_budget
        Stop the NPU search after this many seconds (checked between measurements).
    seed
        Orders each task's candidates after the default plan; seeds MetaSchedule.
    runner
        ``"sim"`` (simulated cycles, deterministic), ``"host"`` (wall time in fast mode),
        or an :class:`~lepton_compiler.tuning.RPCRunner`, for the NPU kernels.
    host_trials
        MetaSchedule trials over the host kernels, measured on this machine (default: 0 for
        ``lepton``, ``trials`` for ``host``).
    timeout
        Seconds before a candidate counts as hung (recorded as failed).

    Returns
    -------
    TuningSession
        ``.summary()`` gives per task trials, failures, default and best cost.
    """
    from lepton_compiler.tuning.rpc import RPCRunner

    if target not in ("lepton", "host"):
        raise OptionError(f"unknown tuning target {target!r}; use 'lepton' or 'host'")
    if quantize is None and target == "lepton":
        raise OptionError("tune() needs quantize=QuantConfig(...): the NPU runs int8 kernels")
    if not isinstance(trials, int) or trials < 0:
        raise OptionError(f"trials must be a non-negative integer, got {trials!r}")
    if host_trials is None:
        host_trials, trials = (trials, 0) if target == "host" else (0, trials)
    elif not isinstance(host_trials, int) or host_trials < 0:
        raise OptionError(f"host_trials must be a non-negative integer, got {host_trials!r}")
    if isinstance(runner, str):
        if runner not in RUNNERS:
            raise OptionError(f"unknown runner {runner!r}; use 'sim', 'host' or "
                              "RPCRunner(tracker=..., key=...)")
        runner = LocalRunner(runner, timeout=timeout)
    elif not isinstance(runner, (LocalRunner, RPCRunner)):
        raise OptionError(f"runner must be 'sim', 'host' or an RPCRunner, not "
                          f"{type(runner).__name__}")
    start = time.perf_counter()
    db = Database(work_dir)
    tasks, lepton_spec, host_kernels, host_target = extract_tasks(
        model, example_inputs, quantize, spec, cpu, target)
    host_ran = 0
    if host_trials:
        from lepton_compiler.tuning.host import tune_host_kernels

        host_runner = LocalRunner("host", timeout=timeout)
        try:
            host_ran = tune_host_kernels(host_kernels, host_target, db, host_trials,
                                         host_runner, str(work_dir), seed)
        finally:
            host_runner.close()
        logger.info("tuning: %d MetaSchedule trials over %d host kernels", host_ran,
                    len(host_kernels))
    # Cascade choices are measured by the sim runner (it holds the resident operands in the
    # emulated SRAM); host timings and remote servers measure the plans alone.
    cascades = isinstance(runner, LocalRunner) and runner.mode == "sim"
    queues = []
    for i, task in enumerate(tasks):
        rng = np.random.default_rng([seed, i])
        space = [k for k in task.candidates if cascades or not k.get("resident")]
        # the default plan, then each cascade choice's default plan, then the rest at random
        firsts = [k for i, k in enumerate(space) if i == 0 or
                  k.get("resident") != space[i - 1].get("resident")]
        rest = [k for k in space if k not in firsts]
        order = [task.default] + [k for k in firsts if knob_key(k) != knob_key(task.default)] \
            + [rest[j] for j in rng.permutation(len(rest))]
        done = db.measured(task.workload)
        queues.append([k for k in order if knob_key(k) not in done])
    session = TuningSession(str(work_dir), tasks, db, runner.unit, host_trials_run=host_ran)
    budget = min(trials, sum(len(q) for q in queues))
    try:
        with progress(budget, "tuning", progress_bar) as bar:
            while session.trials_run < budget:
                if time_budget is not None and time.perf_counter() - start > time_budget:
                    session.stopped = f"time budget of {time_budget:g}s reached"
                    break
                for task, queue in zip(tasks, queues, strict=True):
                    if not queue or session.trials_run >= budget:
                        continue
                    knobs = queue.pop(0)
                    result = runner.measure(task.func, lepton_spec, knobs)
                    record = {"workload": task.workload, "knobs": knobs,
                              "status": result["status"], "unit": runner.unit,
                              "runner": runner.name,
                              "default": knob_key(knobs) == knob_key(task.default)}
                    if result["status"] == "ok":
                        record["cost"] = result["cost"]
                    else:
                        record["error"] = result.get("error", "")
                    db.append(record)
                    session.trials_run += 1
                    best = db.best(task.workload)
                    bar.update(1, note=f"{task.kernels[0]}: best "
                               f"{_cost(best['cost'] if best else None, runner.unit)}")
    finally:
        runner.close()
    session.seconds = time.perf_counter() - start
    if not session.stopped:
        session.stopped = "trial budget used" if session.trials_run >= trials and any(queues) \
            else "every candidate measured"
    logger.info("tuning: %d trials in %.1fs (%s)", session.trials_run, session.seconds,
                session.stopped)
    return session
