"""lepton_runtime — the thin runtime for Lepton Compiler artifacts.

Depends on numpy and apache-tvm-ffi only; never imports tvm, torch or onnx.
"""

from .errors import (
    ArtifactError,
    ArtifactIntegrityError,
    InputError,
    KernelError,
    LeptonError,
    UnsafeArchiveError,
    UnsupportedArtifactError,
)
from .format import FORMAT_VERSION, SUPPORTED_FORMAT_VERSIONS
from .session import Session, TensorInfo, aligned_empty, inspect, load

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "SUPPORTED_FORMAT_VERSIONS",
    "ArtifactError",
    "ArtifactIntegrityError",
    "InputError",
    "KernelError",
    "LeptonError",
    "Session",
    "TensorInfo",
    "UnsafeArchiveError",
    "UnsupportedArtifactError",
    "aligned_empty",
    "inspect",
    "load",
]
