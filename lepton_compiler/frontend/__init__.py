"""Stage ``import``: PyTorch modules (``torch.export``) and ONNX models to Relax, ONNX
validated first against resource limits."""

from .importer import ImportedModel, import_model
from .onnx_validate import Limits

__all__ = ["ImportedModel", "Limits", "import_model"]
