"""What ``build(..., tuning_db=)`` takes from a tuning database: the best recorded NPU plan
and MetaSchedule host schedule of each kernel workload."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lepton_compiler.tuning.database import Database
from lepton_compiler.tuning.measure import workload_key


@dataclass
class TunedSchedules:
    """What ``build(..., tuning_db=)`` schedules from: ``npu(func)`` gives the best recorded
    plan of an NPU GEMM kernel, ``host(func)`` the best MetaSchedule schedule of a host
    kernel; either returns ``None`` when the database has no record of the workload.
    ``database`` (None without one) answers the cascade planner (measured cycles of each
    cascade choice); ``overrides`` (workload key -> knobs) are the plans it chose instead of
    the best uncascaded ones."""

    npu: Any
    host: Any
    database: Any = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


def tuned_schedules(tuning_db: Any, spec: Any, host: Any) -> TunedSchedules:
    """The tuned schedules of a work directory for a build with NPU ``spec`` (``None`` on
    the host target) and host target ``host``."""
    from lepton_compiler.target.npu_schedule import gemm_extents, plan_from_knobs
    from lepton_compiler.tuning.host import host_schedules

    db = tuning_db if isinstance(tuning_db, Database) else Database(tuning_db, create=False)

    def npu_plan(func: Any) -> Any:
        key = workload_key(func, spec)
        knobs = tuned.overrides.get(key) or (db.best(key) or {}).get("knobs")
        if knobs is None:
            return None
        return plan_from_knobs(*gemm_extents(func), spec, knobs)

    tuned = TunedSchedules(npu_plan if spec is not None else (lambda func: None),
                           host_schedules(db, host.tvm_target()),
                           db if spec is not None else None)
    return tuned
