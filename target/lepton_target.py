"""Target registration: ``target="lepton"`` as a TVM target carrying the spec.

The TVM target is the host's LLVM target (the NPU's instructions are tensor intrinsics whose
implementations are linked into the artifact) with the ``lepton`` key first, so
key-dispatched rules select Lepton schedules, and the spec identity in ``model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lepton_compiler.target.host import HostTarget, resolve_host
from lepton_compiler.target.spec import LeptonSpec, load_spec

TARGET_KEY = "lepton"


@dataclass(frozen=True)
class LeptonTarget:
    """The NPU target: a spec plus the host CPU that runs the fallback and the emulation."""

    spec: LeptonSpec
    host: HostTarget

    @property
    def model(self) -> str:
        """``<spec name>-<fingerprint>``: the spec identity recorded in the TVM target."""
        return f"{self.spec.name}-{self.spec.fingerprint()}"

    @property
    def tag(self) -> str:
        """The TVM target tag registered for this spec on this host CPU."""
        return f"{TARGET_KEY}/{self.model}/{self.host.mcpu}"

    def tvm_target(self) -> Any:
        """The TVM target: the tag (registered idempotently) over the llvm kind."""
        import tvm

        config = {
            "kind": "llvm",
            "keys": [TARGET_KEY, "cpu"],
            "mcpu": self.host.mcpu,
            "num-cores": self.host.num_cores,
            "model": self.model,
        }
        if self.tag not in tvm.target.list_tags():
            tvm.target.register_tag(self.tag, config)
        return tvm.target.Target(self.tag)

    def manifest(self) -> dict:
        """Target description for an artifact manifest."""
        return {**self.host.manifest(), "kind": TARGET_KEY, "spec": self.spec.name,
                "spec_fingerprint": self.spec.fingerprint(),
                "peak_macs_per_cycle": self.spec.matrix.macs_per_cycle,
                "dma_bytes_per_cycle": self.spec.dma.bytes_per_cycle,
                "clock_hz": self.spec.machine.clock_hz,
                "host_fallback": dict(vars(self.spec.host_fallback))}


def resolve_lepton(spec: Any = None, cpu: str | None = None,
                   num_cores: int | None = None) -> LeptonTarget:
    """The Lepton target for ``spec`` (bundled v1 by default; a path, dict or spec)."""
    return LeptonTarget(load_spec(spec), resolve_host(cpu, num_cores))


def is_lepton_target(target: Any) -> bool:
    """True for a TVM target whose keys mark it as a Lepton target."""
    return TARGET_KEY in [str(k) for k in getattr(target, "keys", ())]
