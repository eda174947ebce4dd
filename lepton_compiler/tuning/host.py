"""MetaSchedule tuning of the host kernels (what runs on the CPU, not the NPU).

TVM's MetaSchedule searches each kernel's schedule space with its CPU rules (multi-level
tiling, parallelisation, vectorisation, unrolling, layout rewrite of constant weights).
Lepton supplies three parts of the loop:

- ``InProcessBuilder`` compiles candidates in this process. MetaSchedule's own builder
  starts a pool of popen workers, each importing TVM and its tensor intrinsics; here that
  took 100 s before the first build and then timed out every candidate.
- ``WorkerRunner`` times each compiled candidate in the tuning session's worker process
  (:class:`~lepton_compiler.tuning.measure.LocalRunner`), so a hung or crashing candidate is
  killed after ``timeout`` and recorded as failed, as for NPU candidates.
- ``HostDatabase`` keeps MetaSchedule's records in the session's crash-safe
  ``records.jsonl`` (one fsync'ed line per measurement, ``"kind": "host"``), keyed by the
  kernel's structural hash and the host CPU, so identical kernels of other models hit.

``build(..., tuning_db=...)`` applies the best record of each host kernel through
:func:`host_schedule`; kernels without records keep Lepton's own host schedules.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

from lepton_compiler.tuning.database import Database

logger = logging.getLogger(__name__)

FAILED_SECONDS = 1e9  # MetaSchedule records a failed run as 1e10 seconds


def host_workload_key(func: Any, target: Any) -> str:
    """The database key of a host kernel: its structural hash and the CPU it is tuned for."""
    import tvm_ffi

    mcpu = str(target.attrs.get("mcpu", "generic")) if "mcpu" in target.attrs else "generic"
    return f"host/{tvm_ffi.structural_hash(func) & 0xFFFFFFFFFFFF:012x}/{target.kind.name}-{mcpu}"


def _classes() -> tuple[Any, Any, Any, Any]:
    """The MetaSchedule subclasses, defined on first use (importing MetaSchedule is slow)."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    from tvm.ir.utils import derived_object

    from lepton_compiler import tvm_compat

    ms = tvm_compat.meta_schedule()
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.database import PyDatabase
    from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerResult

    @derived_object
    class InProcessBuilder(PyBuilder):
        """Compiles each candidate in this process into its own temporary folder."""

        def __init__(self, scratch: str) -> None:
            super().__init__()
            self.scratch = scratch

        def build(self, build_inputs: list) -> list:
            results = []
            for item in build_inputs:
                folder = tempfile.mkdtemp(dir=self.scratch)  # MetaSchedule removes the folder
                try:
                    path, _ = compile_library(item.mod, item.target, folder)
                    results.append(BuilderResult(path, None))
                except Exception as err:  # a candidate that does not build is a failed trial
                    shutil.rmtree(folder, ignore_errors=True)
                    results.append(BuilderResult(None, f"{type(err).__name__}: {err}"[:2000]))
            return results

    @derived_object
    class Finished(PyRunnerFuture):
        def __init__(self, result: Any) -> None:
            super().__init__()
            self.value = result

        def done(self) -> bool:
            return True

        def result(self) -> Any:
            return self.value

    @derived_object
    class WorkerRunner(PyRunner):
        """Times candidates in a :class:`LocalRunner` worker (killed when hung)."""

        def __init__(self, runner: Any) -> None:
            super().__init__()
            self.runner = runner

        def run(self, runner_inputs: list) -> list:
            futures = []
            for item in runner_inputs:
                args = [(list(map(int, a.shape)), str(a.dtype)) for a in item.args_info]
                result = self.runner.measure_library(item.artifact_path, args)
                if result["status"] == "ok":
                    futures.append(Finished(RunnerResult(result["seconds"], None)))
                else:
                    futures.append(Finished(RunnerResult(None, result["error"])))
            return futures

    @derived_object
    class HostDatabase(PyDatabase):
        """MetaSchedule's database over the session's crash-safe JSON lines."""

        def __init__(self, db: Database, target: Any) -> None:
            super().__init__()
            self.db = db
            self.target = target
            self.inner = ms.database.MemoryDatabase()
            self.persisted: set[str] = set()
            workloads: dict[str, Any] = {}
            for record in db.records:
                if record.get("kind") != "host" or record.get("default"):
                    continue
                key = record["workload"]
                if key not in workloads:
                    if "ms_workload" not in record:
                        continue  # its workload line was torn; the trace alone is not usable
                    wl = ms.database.Workload.from_json(record["ms_workload"])
                    workloads[key] = self.commit_workload(wl.mod)
                    self.persisted.add(key)
                self.inner.commit_tuning_record(ms.database.TuningRecord.from_json(
                    record["knobs"], workloads[key]))

        def _key(self, mod: Any) -> str:
            return host_workload_key(mod["main"], self.target)

        def has_workload(self, mod: Any) -> bool:
            return self.inner.has_workload(mod)

        def commit_workload(self, mod: Any) -> Any:
            return self.inner.commit_workload(mod)

        def commit_tuning_record(self, record: Any) -> None:
            self.inner.commit_tuning_record(record)
            key = self._key(record.workload.mod)
            secs = [float(s) for s in record.run_secs] if record.run_secs is not None else []
            ok = bool(secs) and max(secs) < FAILED_SECONDS
            trace = _plain(ms.database.database._ffi_api.TuningRecordAsJSON(record))
            line = {"workload": key, "kind": "host", "knobs": trace,
                    "status": "ok" if ok else "failed", "unit": "seconds",
                    "runner": "metaschedule"}
            if ok:
                line["cost"] = _median(secs)
            if key not in self.persisted:
                line["ms_workload"] = record.workload.as_json()
                self.persisted.add(key)
            self.db.append(line)

        def get_top_k(self, workload: Any, top_k: int) -> list:
            return list(self.inner.get_top_k(workload, top_k))

        def get_all_tuning_records(self) -> list:
            return list(self.inner.get_all_tuning_records())

        def query_tuning_record(self, mod: Any, target: Any, workload_name: str) -> Any:
            return self.inner.query_tuning_record(mod, target, workload_name)

        def query_schedule(self, mod: Any, target: Any, workload_name: str) -> Any:
            return self.inner.query_schedule(mod, target, workload_name)

        def query_ir_module(self, mod: Any, target: Any, workload_name: str) -> Any:
            return self.inner.query_ir_module(mod, target, workload_name)

        def __len__(self) -> int:
            return len(self.inner)

    _CLASSES = (InProcessBuilder, WorkerRunner, HostDatabase, ms)
    return _CLASSES


_CLASSES: tuple[Any, Any, Any, Any] | None = None


def _plain(value: Any) -> Any:
    """A record's JSON form as plain Python: IndexMaps in a trace become their TVM JSON
    string, the form TVM's own JSON database stores and ``TuningRecord.from_json`` reads
    (``TuningRecord.as_json`` raises on them)."""
    import tvm

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tvm.tirx.IndexMap):
        return tvm.ir.save_json(value)
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "__len__") and hasattr(value, "__getitem__"):
        return [_plain(v) for v in value]
    return value.value if hasattr(value, "value") else str(value)


def distinct_kernels(kernels: dict[str, Any]) -> dict[str, Any]:
    """One kernel per structural hash (the first name seen), in name order."""
    import tvm_ffi

    seen: dict[int, str] = {}
    funcs = {name: as_workload(func) for name, func in kernels.items()}
    for name in sorted(funcs):
        seen.setdefault(tvm_ffi.structural_hash(funcs[name]), name)
    return {name: funcs[name] for name in seen.values()}


def without_layout_rewrite(mod: Any) -> Any:
    """``mod`` timed as the build runs it: constant weights arrive already packed (builds
    fold the packing into the weights), so the packing block is dropped and the kernel takes
    the packed layout."""
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)


def compile_library(mod: Any, target: Any, folder: str) -> tuple[str, list]:
    """Compile a one-kernel module as the build runs it (weights already packed) into
    ``folder``; returns the library path and the kernel's operands as (shape, dtype)."""
    import tvm

    mod = without_layout_rewrite(mod)
    path = os.path.join(folder, "kernel.so")
    tvm.compile(mod, target=target).export_library(path)
    return path, [([int(d) for d in p.shape], str(p.dtype)) for p in mod["main"].params]


def _median(seconds: list) -> float:
    """The middle timing (the upper one of an even count), as the database records it."""
    return sorted(float(s) for s in seconds)[len(seconds) // 2]


def as_workload(func: Any) -> Any:
    """A kernel as MetaSchedule tunes and looks it up: a public ``main``."""
    return func.with_attr("global_symbol", "main")


def measure_defaults(kernels: dict[str, Any], target: Any, db: Database, runner: Any) -> None:
    """Record Lepton's own host schedule of each kernel (``"default": true``), measured like
    the MetaSchedule candidates, once per workload, so summaries show the gain."""
    import tvm

    from lepton_compiler.target.host import llvm_features
    from lepton_compiler.target.host_schedule import (
        VECTOR_FEATURES,
        HostScheduleConfig,
        schedule_prim_func,
    )

    config = HostScheduleConfig.for_features(llvm_features(target, VECTOR_FEATURES))
    done = {r["workload"] for r in db.records if r.get("kind") == "host" and r.get("default")}
    for name, func in distinct_kernels(kernels).items():
        key = host_workload_key(func, target)
        if key in done:
            continue
        with tempfile.TemporaryDirectory(prefix="lepton-default-") as folder:
            path, args = compile_library(
                tvm.IRModule({"main": schedule_prim_func(func, config)}),
                target, folder)
            result = runner.measure_library(path, args)
        record = {"workload": key, "kind": "host", "default": True, "knobs": "lepton",
                  "kernel": name,
                  "status": result["status"], "unit": "seconds", "runner": "host"}
        if result["status"] == "ok":
            record["cost"] = _median(result["seconds"])
        else:
            record["error"] = result["error"]
        db.append(record)


def tune_host_kernels(kernels: dict[str, Any], target: Any, db: Database, trials: int,
                      runner: Any, work_dir: str, seed: int = 0) -> int:
    """Run MetaSchedule over ``kernels`` for ``trials`` measurements; returns how many ran.

    Records go to ``db`` as they are measured; a resumed session starts from them.
    """
    import tvm

    if not kernels or trials <= 0:
        return 0
    builder_cls, runner_cls, database_cls, ms = _classes()
    measure_defaults(kernels, target, db, runner)
    before = len(db.records)
    scratch = tempfile.mkdtemp(prefix="lepton-ms-")
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level = ms_logger.level
    ms_logger.setLevel(logging.WARNING)
    try:
        ms.tune_tir(
            tvm.IRModule(distinct_kernels(kernels)), target, os.path.join(work_dir, "ms-logs"),
            max_trials_global=trials, num_trials_per_iter=min(16, trials),
            builder=builder_cls(scratch), runner=runner_cls(runner),
            database=database_cls(db, target), cost_model="random",
            # Without xgboost (not a dependency) the cost model is random, so a large
            # evolved population buys nothing but time: 128 samples per round.
            strategy=ms.search_strategy.EvolutionarySearch(
                population_size=128, init_min_unmeasured=16, genetic_num_iters=2),
            num_tuning_cores=1, seed=seed)
    finally:
        ms_logger.setLevel(level)
        shutil.rmtree(scratch, ignore_errors=True)
    return len(db.records) - before


def host_schedules(db: Database, target: Any) -> Any:
    """A chooser for ``lowering.schedule``: the best recorded MetaSchedule schedule of a host
    kernel, or ``None`` when the database has none for it."""
    # Per workload, the best MetaSchedule and the best default cost.
    best: dict[str, dict[bool, float]] = {}
    for r in db.records:
        if r.get("kind") == "host" and r["status"] == "ok":
            costs = best.setdefault(r["workload"], {})
            default = bool(r.get("default"))
            costs[default] = min(r["cost"], costs.get(default, float("inf")))
    if not any(False in costs for costs in best.values()):
        return lambda func: None
    _, _, database_cls, ms = _classes()
    database = database_cls(db, target)

    def choose(func: Any) -> Any:
        workload = as_workload(func)
        costs = best.get(host_workload_key(workload, target), {})
        if False not in costs or costs.get(True, float("inf")) <= costs[False]:
            return None  # Lepton's own schedule is as fast as anything measured
        sch = ms.tir_integration.compile_tir(database, workload, target)
        return None if sch is None else sch.mod["main"]

    return choose
