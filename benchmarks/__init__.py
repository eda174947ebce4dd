"""Benchmarks of Lepton Compiler, measured side by side in one run (see README)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(stem: str, result: dict) -> Path:
    """Write ``result`` to ``results/<stem>_<date>.json`` and say so."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stem}_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {out}")
    return out
