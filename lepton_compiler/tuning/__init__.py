"""Autotuning: sessions over NPU plans and MetaSchedule host schedules, the crash-safe
database, runners."""

from lepton_compiler.tuning.database import Database
from lepton_compiler.tuning.measure import LocalRunner
from lepton_compiler.tuning.rpc import RPCRunner
from lepton_compiler.tuning.tuner import TuningSession, summarize, tune

__all__ = ["Database", "LocalRunner", "RPCRunner", "TuningSession", "summarize", "tune"]
