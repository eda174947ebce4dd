"""The artifact's parallel runtime: a small thread pool (``csrc/lepton_parallel.c``) that
provides ``__TVMBackendParallelLaunch`` for kernels with parallel loops, since ``tvm_ffi``
alone leaves that pointer null."""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

from lepton_compiler.errors import CompileError


def runtime_object(workdir: Path) -> str:
    """Compile the artifact's parallel runtime (C) to an object file for linking."""
    source = resources.files("lepton_compiler.target").joinpath("csrc/lepton_parallel.c")
    obj = workdir / "lepton_parallel.o"
    cmd = ["cc", "-c", "-O2", "-fPIC", "-std=gnu11", "-o", str(obj), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileError(f"compiling the artifact runtime failed: {result.stderr.strip()}")
    return str(obj)
