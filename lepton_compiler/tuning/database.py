"""The tuning database: one JSON record per line in ``<work_dir>/records.jsonl``.

Crash-safe by construction: every record is one ``write`` of a whole line followed by
``flush`` and ``fsync``, so a crash can only tear the *last* line. Loading skips a torn last
line (and trims it from the file, so the next record starts on a fresh line); a malformed
line anywhere else is an error naming the file and line — the database is not silently
rewritten. Workloads are keyed with the NPU spec's fingerprint, so records made for another
spec never apply.

A record::

    {"workload": "gemm/196x256x2304/b1/epilogue/<spec fingerprint>",
     "knobs": {"k_block": 2304, "weights_stationary": false, "m_block": 2},
     "status": "ok" | "failed",  "cost": 1234567,  "unit": "cycles" | "seconds",
     "runner": "sim", "error": "..."}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lepton_compiler.errors import TuningError

logger = logging.getLogger(__name__)

RECORDS = "records.jsonl"
REQUIRED = ("workload", "knobs", "status")


def knob_key(knobs: dict[str, Any]) -> str:
    """A canonical string for a set of tuning choices."""
    return json.dumps(knobs, sort_keys=True)


def _resident(knobs: Any) -> list[str]:
    """The cascade choice of an NPU record (none for host schedules, whose knobs are text)."""
    return list(knobs.get("resident", ())) if isinstance(knobs, dict) else []


class Database:
    """Append-only tuning records of one work directory."""

    def __init__(self, work_dir: str | os.PathLike, create: bool = True) -> None:
        self.dir = Path(work_dir)
        self.path = self.dir / RECORDS
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise TuningError(f"{self.path}: no tuning database here; run `lepton tune` with "
                              f"--work-dir {self.dir} first")
        self.records: list[dict[str, Any]] = self._load() if self.path.exists() else []

    def _load(self) -> list[dict[str, Any]]:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        records, good_end, offset = [], 0, 0
        for number, raw in enumerate(lines, start=1):
            end = offset + len(raw) + 1
            last = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
            if raw.strip():
                try:
                    record = json.loads(raw)
                    if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
                        raise ValueError(f"a record needs {', '.join(REQUIRED)}")
                except ValueError as err:
                    torn = last and not data.endswith(b"\n")
                    if torn:
                        logger.warning("%s:%d: skipping a torn last record (an interrupted "
                                       "write)", self.path, number)
                        break
                    raise TuningError(f"{self.path}:{number}: corrupt tuning record ({err}); "
                                      "remove or fix that line") from None
                records.append(record)
            good_end = min(end, len(data))
            offset = end
        if good_end < len(data):  # drop the torn tail so appends start on a fresh line
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (flush + fsync) before returning."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)

    def for_workload(self, workload: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["workload"] == workload]

    def measured(self, workload: str) -> set[str]:
        """Knob keys already recorded (measured or failed) for a workload."""
        return {knob_key(r["knobs"]) for r in self.for_workload(workload)}

    def best(self, workload: str, resident: Iterable[str] = ()) -> dict[str, Any] | None:
        """The lowest-cost successful record of a workload measured with the activations
        ``resident`` held in SRAM (a cascade choice; default none) (ties: the first
        recorded)."""
        ok = self.measured_ok(workload, resident)
        return min(ok, key=lambda r: r["cost"]) if ok else None

    def measured_ok(self, workload: str, resident: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The successful records of a workload under one cascade choice, in record order."""
        want = sorted(resident)
        return [r for r in self.for_workload(workload) if r["status"] == "ok"
                and sorted(_resident(r["knobs"])) == want]

    def workloads(self) -> Iterable[str]:
        return dict.fromkeys(r["workload"] for r in self.records)
