"""The host CPU target: resolve the CPU, its features, and the TVM target for it."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

# ISA flags (as /proc/cpuinfo spells them) that LLVM may use for a given -mcpu; an artifact
# records those of its build CPU so the runtime can refuse a machine without them.
_ISA_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2",
    "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni",
    "asimd", "sve",
)  # fmt: skip


@dataclass(frozen=True)
class HostTarget:
    """A resolved host CPU: LLVM cpu name, core count, and the features kernels may use."""

    mcpu: str
    num_cores: int
    cpu_features: tuple[str, ...] = field(default_factory=tuple)

    def tvm_target(self):  # -> tvm.target.Target
        import tvm

        return tvm.target.Target(
            {"kind": "llvm", "mcpu": self.mcpu, "num-cores": self.num_cores}
        )

    def features(self, wanted: tuple[str, ...]) -> set[str]:
        """Which of ``wanted`` (LLVM feature names, e.g. ``avx512f``) this CPU has: from
        /proc/cpuinfo for this machine, from LLVM's CPU table for a named CPU."""
        if self.cpu_features:
            have = set(self.cpu_features)
            return {f for f in wanted if f in have}
        return llvm_features(self.tvm_target(), wanted)

    def manifest(self) -> dict:
        return {
            "kind": "host",
            "system": sys.platform,
            "machine": platform.machine().lower(),
            "mcpu": self.mcpu,
            "num_cores": self.num_cores,
            "cpu_features": list(self.cpu_features),
        }


def llvm_features(target: Any, wanted: tuple[str, ...]) -> set[str]:
    """Which of ``wanted`` the CPU of a TVM llvm ``target`` has, by LLVM's CPU table."""
    from tvm.target import codegen

    return {f for f in wanted if codegen.llvm_cpu_has_features(f, target)}


def _host_flags() -> tuple[str, ...]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    have = set(value.split())
                    return tuple(flag for flag in _ISA_FLAGS if flag in have)
    except OSError:
        pass
    return ()


def resolve_host(mcpu: str | None = None, num_cores: int | None = None) -> HostTarget:
    """The host target for this machine, or for ``mcpu`` when given (portable builds)."""
    from tvm.target import codegen

    if num_cores is None:
        affinity = getattr(os, "sched_getaffinity", None)
        num_cores = len(affinity(0)) if affinity else (os.cpu_count() or 1)
    cores = num_cores
    if mcpu is None:
        return HostTarget(codegen.llvm_get_system_cpu(), cores, _host_flags())
    # A named CPU: we cannot know exactly which flags LLVM will use, so record none.
    return HostTarget(mcpu, cores, ())
