"""Lepton Compiler: an ahead-of-time compiler for the Lepton NPU, built on Apache TVM (Relax).

Public API::

    import lepton_compiler
    compiled = lepton_compiler.build(model, example_inputs)   # torch.nn.Module or ONNX
    y = compiled(x)
    compiled.export("model.lepton")                            # run it with lepton_runtime
"""

__version__ = "0.1.0"

from . import zoo
from .compiled_model import CompiledModel
from .driver import build
from .errors import (
    ArtifactError,
    CompileError,
    InputError,
    LeptonError,
    ModelLoadError,
    OptionError,
    SpecError,
    UnsupportedOperatorError,
)

__all__ = [
    "ArtifactError",
    "CompileError",
    "CompiledModel",
    "InputError",
    "LeptonError",
    "ModelLoadError",
    "OptionError",
    "SpecError",
    "UnsupportedOperatorError",
    "__version__",
    "build",
    "zoo",
]
