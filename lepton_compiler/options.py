"""The options of one compilation, frozen and validated before any work is done.

``build``, ``check``, ``analyze_quantization``, ``prune`` and ``tune`` take their keyword
arguments into one :class:`BuildOptions`; :meth:`BuildOptions.create` checks every field and
normalises the sub-configurations (``QuantConfig``, ``PruneConfig``), so a bad option is an
``OptionError`` (or ``SpecError``) before the model is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lepton_compiler.errors import OptionError
from lepton_compiler.optimize.pruning import PruneConfig
from lepton_compiler.optimize.pruning import check_config as check_prune
from lepton_compiler.optimize.quantization import QuantConfig
from lepton_compiler.optimize.quantization import check_config as check_quantize

TARGETS = ("host", "lepton")
OPT_LEVELS = (0, 1, 2)


@dataclass(frozen=True)
class BuildOptions:
    """Everything a composition of stages needs besides the model (see ``build``)."""

    target: str = "host"
    cpu: str | None = None
    num_threads: int | None = None
    spec: Any = None
    quantize: QuantConfig | None = None
    prune: PruneConfig | None = None
    tuning_db: Any = None
    limits: Any = None
    opt_level: int = 2
    fuse: bool = True
    cascade: bool = True
    verify: bool = True
    progress: bool | None = None

    @classmethod
    def create(cls, **options: Any) -> BuildOptions:
        """Validated options; ``OptionError`` names the bad one and the fix."""
        target = options.get("target", "host")
        if target not in TARGETS:
            raise OptionError(f"unknown target {target!r}; available targets: "
                              f"{', '.join(TARGETS)}")
        opt_level = options.get("opt_level", 2)
        if opt_level not in OPT_LEVELS:
            raise OptionError(f"opt_level must be 0, 1 or 2, got {opt_level!r}")
        if options.get("spec") is not None and target != "lepton":
            raise OptionError("spec= describes the Lepton NPU; pass it with target='lepton'")
        if options.get("quantize") is not None:
            options["quantize"] = check_quantize(options["quantize"])
        if options.get("prune") is not None:
            options["prune"] = check_prune(options["prune"])
        if opt_level == 0:
            options["fuse"] = False  # the reference pipeline compiles one kernel per op
        return cls(**options)

    @property
    def optimize(self) -> bool:
        """Run the graph optimisations (batch-norm folding, layout): opt_level > 0, and
        always for int8 (the integer kernels take NHWC)."""
        return self.opt_level > 0 or self.quantize is not None
