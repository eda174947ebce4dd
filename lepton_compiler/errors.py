"""Compiler errors. The hierarchy is rooted at ``LeptonError``, shared with the runtime."""

from __future__ import annotations

from lepton_runtime.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    InputError,
    KernelError,
    LeptonError,
    UnsafeArchiveError,
    UnsupportedArtifactError,
)

__all__ = [
    "ArtifactError",
    "ArtifactIntegrityError",
    "CalibrationError",
    "CompileError",
    "InputError",
    "KernelError",
    "LeptonError",
    "ModelLoadError",
    "OptionError",
    "QuantizationError",
    "SpecError",
    "UnsafeArchiveError",
    "UnsupportedArtifactError",
    "UnsupportedOperatorError",
]


class ModelLoadError(LeptonError):
    """A model could not be read or fails validation (bad file, bad bytes, invalid graph)."""


class UnsupportedOperatorError(LeptonError):
    """The model uses operators Lepton cannot import. Lists every op type and its nodes.

    Attributes
    ----------
    ops : dict[str, list[str]]
        Each unsupported op type mapped to the names of the nodes that use it.
    reasons : dict[str, str]
        For op types that are supported in general but not as these nodes use them (an
        attribute value Lepton cannot compute exactly): why.
    """

    def __init__(self, frontend: str, ops: dict[str, list[str]],
                 reasons: dict[str, str] | None = None) -> None:
        self.ops = {op: list(nodes) for op, nodes in sorted(ops.items())}
        self.reasons = dict(reasons or {})
        lines = [f"{len(self.ops)} unsupported {frontend} operator type(s):"]
        for op, nodes in self.ops.items():
            shown = ", ".join(nodes[:8]) + (f", … ({len(nodes)} nodes)" if len(nodes) > 8 else "")
            why = f" ({self.reasons[op]})" if op in self.reasons else ""
            lines.append(f"  {op}: used by {shown}{why}")
        lines.append("Replace these ops in the model, or export it with supported equivalents.")
        super().__init__("\n".join(lines))


class OptionError(LeptonError):
    """An argument to build/compile is invalid (unknown target, bad example inputs, ...)."""


class SpecError(LeptonError):
    """A Lepton NPU spec is invalid; the message names the file and the field."""


class CompileError(LeptonError):
    """Compilation failed inside the pipeline; the message names the stage and the kernel."""


class QuantizationError(LeptonError):
    """Quantization cannot proceed: a bad calibration set, table or configuration."""


class CalibrationError(QuantizationError):
    """The calibration data is unusable (empty, NaN/Inf, wrong shapes or names)."""


class PruneError(LeptonError):
    """Pruning cannot proceed: unknown layer names, or nothing in the model is prunable."""


class TuningError(LeptonError):
    """A tuning session or database cannot be used: a corrupt record, a bad option."""


def _register_with_ffi() -> None:
    """Errors raised inside TVM callbacks (a ``lepton.*`` pass, a packed function) come back
    through the FFI as the same class, not as a bare ``RuntimeError``."""
    import tvm_ffi

    for cls in (ModelLoadError, OptionError, SpecError, CompileError, QuantizationError,
                CalibrationError, PruneError, TuningError):
        tvm_ffi.register_error(f"lepton.{cls.__name__}", cls)


_register_with_ffi()
