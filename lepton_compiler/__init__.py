"""Lepton Compiler: an ahead-of-time compiler for the Lepton NPU, built on Apache TVM (Relax).

Public API::

    import lepton_compiler
    compiled = lepton_compiler.build(model, example_inputs)   # torch.nn.Module or ONNX
    y = compiled(x)
    compiled.export("model.lepton")                            # run it with lepton_runtime

    config = lepton_compiler.QuantConfig(calibration_data=samples)  # int8 for the NPU
    compiled = lepton_compiler.build(model, example_inputs, target="lepton", quantize=config)
"""

__version__ = "0.1.0"

from . import zoo
from .compiled_model import CompiledModel
from .driver import build
from .errors import (
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
from .onnx_validate import Limits
from .placement import PlacementReport, check
from .pruning import PruneConfig, PruneReport, prune
from .quant_analysis import QuantReport, analyze_quantization
from .quantization import CalibrationTable, QuantConfig
from .tuning import RPCRunner, TuningSession, tune

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
