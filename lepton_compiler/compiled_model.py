"""CompiledModel: the result of ``build`` — callable, describable, exportable.

It runs through the very runtime that deployment machines use (``lepton_runtime``), loaded
from its own artifact bytes, so in-process results equal the exported artifact's bit for bit.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np

import lepton_runtime
from lepton_compiler.lower import artifact


class CompiledModel:
    """A compiled model.

    Call it like the original model with numpy arrays or torch tensors (positionally, by input
    name, or as one mapping); it returns numpy arrays (one array for a single output, else a
    tuple). ``inputs``/``outputs`` describe the signature; ``export(path)`` writes the
    self-contained artifact that ``lepton_runtime.load`` runs without the compiler.
    """

    def __init__(self, data: bytes, build_info: dict, quantization: Any = None,
                 report: Any = None) -> None:
        self._data = data
        self.build_info = build_info
        #: For a quantized build, a ``QuantizationResult``: the integer graph, its numpy
        #: reference (``.reference(inputs)``) and the calibration table (``.table.save()``).
        self.quantization = quantization
        #: The placement report (``PlacementReport``): per layer NPU or host, fused ops,
        #: fallback reasons and costs; ``print(compiled.report)`` shows the table.
        self.report = report
        fd, name = tempfile.mkstemp(prefix="lepton-", suffix=".lepton")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self._path = Path(name)
        self._finalizer = weakref.finalize(self, _unlink, self._path)
        self._session = lepton_runtime.load(self._path)

    @property
    def inputs(self) -> tuple[lepton_runtime.TensorInfo, ...]:
        """Name, shape and dtype of each input, in calling order."""
        return self._session.inputs

    @property
    def outputs(self) -> tuple[lepton_runtime.TensorInfo, ...]:
        """Name, shape and dtype of each output, in return order."""
        return self._session.outputs

    @property
    def manifest(self) -> dict:
        """The artifact manifest (versions, target, signature, member hashes)."""
        return self._session.manifest

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        return self._session.run(*args, **kwargs)

    run = __call__

    def export(self, path: str | os.PathLike) -> Path:
        """Write the artifact (``.lepton``) to ``path`` atomically; returns the path."""
        return artifact.write(path, self._data)

    def to_bytes(self) -> bytes:
        """The artifact as bytes."""
        return self._data

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"CompiledModel(target={self.build_info.get('target')!r}, ({ins}) -> ({outs}))"


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
