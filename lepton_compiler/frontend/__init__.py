"""Stage ``import``: PyTorch modules (``torch.export``) and ONNX models to Relax, ONNX
validated first against resource limits."""

from lepton_compiler.frontend.importer import ImportedModel, import_model, load_onnx
from lepton_compiler.frontend.onnx_validate import Limits

__all__ = ["ImportedModel", "Limits", "import_model", "load_onnx"]
