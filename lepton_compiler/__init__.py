"""Lepton Compiler: an ahead-of-time compiler for the Lepton NPU, built on Apache TVM (Relax).

Public API::

    import lepton_compiler
    compiled = lepton_compiler.build(model, example_inputs)   # torch.nn.Module or ONNX
    y = compiled(x)
    compiled.export("model.lepton")                            # run it with lepton_runtime

    config = lepton_compiler.QuantConfig(calibration_data=samples)  # int8 for the NPU
    compiled = lepton_compiler.build(model, example_inputs, target="lepton", quantize=config)
"""

from lepton_compiler.compiled_model import CompiledModel
from lepton_compiler.errors import (
    ArtifactError,
    CalibrationError,
    CompileError,
    InputError,
    LeptonError,
    ModelLoadError,
    OptionError,
    PruneError,
    QuantizationError,
    SpecError,
    TuningError,
    UnsupportedOperatorError,
)
from lepton_compiler.frontend.onnx_validate import Limits
from lepton_compiler.optimize.pruning import PruneConfig, PruneReport
from lepton_compiler.optimize.quantization import CalibrationTable, QuantConfig
from lepton_compiler.pipeline import analyze_quantization, build, check, prune
from lepton_compiler.reports.placement import PlacementReport
from lepton_compiler.reports.quant_analysis import QuantReport
from lepton_compiler.tuning import RPCRunner, TuningSession, tune
from lepton_compiler.version import __version__

__all__ = [
    "ArtifactError",
    "CalibrationError",
    "CalibrationTable",
    "CompileError",
    "CompiledModel",
    "InputError",
    "LeptonError",
    "Limits",
    "ModelLoadError",
    "OptionError",
    "PlacementReport",
    "PruneConfig",
    "PruneError",
    "PruneReport",
    "QuantConfig",
    "QuantReport",
    "QuantizationError",
    "RPCRunner",
    "SpecError",
    "TuningError",
    "TuningSession",
    "UnsupportedOperatorError",
    "__version__",
    "analyze_quantization",
    "build",
    "check",
    "prune",
    "tune",
    "zoo",
]


def __getattr__(name: str):
    """``lepton_compiler.zoo``: the example models, imported on first use (the zoo lives
    outside the compiler core, in ``lepton_compiler.examples``)."""
    if name == "zoo":
        from lepton_compiler.examples import zoo

        return zoo
    raise AttributeError(f"module 'lepton_compiler' has no attribute {name!r}")
