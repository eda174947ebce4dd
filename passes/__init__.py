"""Graph-level Relax passes of Lepton Compiler, one per file (``lepton_compiler.passes``)."""

from lepton_compiler.passes.fold_batch_norm import FoldBatchNorm
from lepton_compiler.passes.fold_pad import FoldPadIntoConv

__all__ = ["FoldBatchNorm", "FoldPadIntoConv"]
