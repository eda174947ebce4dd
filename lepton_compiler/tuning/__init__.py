"""Autotuning: sessions over NPU plans and MetaSchedule host schedules, the crash-safe
database, runners."""

from .database import Database
from .measure import LocalRunner
from .rpc import RPCRunner
from .tuner import TuningSession, summarize, tune

__all__ = ["Database", "LocalRunner", "RPCRunner", "TuningSession", "summarize", "tune"]
