"""Compile the NPU instruction implementations (C) with the spec's numbers for linking."""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

from lepton_compiler.errors import CompileError
from lepton_compiler.target.spec import LeptonSpec

NPU_SOURCE = "csrc/lepton_npu.c"


def spec_defines(spec: LeptonSpec) -> list[str]:
    """The -D flags through which the C code reads the spec (it holds no numbers itself)."""
    m = spec.matrix
    return [f"-DLEPTON_TILE_M={m.tile_m}", f"-DLEPTON_TILE_N={m.tile_n}",
            f"-DLEPTON_TILE_K={m.tile_k}", f"-DLEPTON_VECTOR_LANES={spec.vector.lanes}",
            f"-DLEPTON_DMA_BYTES_PER_CYCLE={spec.dma.bytes_per_cycle}",
            f"-DLEPTON_DMA_FIXED_CYCLES={spec.dma.fixed_cycles}"]


def npu_object(spec: LeptonSpec, workdir: Path, cpu: str | None = None) -> str:
    """Compile ``lepton_npu.c`` for ``spec`` into ``workdir``; returns the object path.

    ``cpu`` (an LLVM/GCC cpu name such as ``znver3``) lets the compiler vectorise for the
    artifact's CPU; when the C compiler does not know the name, portable code is built.
    """
    import tvm_ffi.libinfo

    source = resources.files("lepton_compiler.target").joinpath(NPU_SOURCE)
    obj = workdir / f"lepton_npu_{spec.fingerprint()}.o"
    base = ["cc", "-c", "-O3", "-fPIC", "-std=gnu11", f"-I{tvm_ffi.libinfo.find_include_path()}",
            *spec_defines(spec), "-o", str(obj), str(source)]
    attempts = [[*base[:2], f"-march={cpu}", *base[2:]], base] if cpu else [base]
    error = ""
    for cmd in attempts:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode == 0:
            return str(obj)
        error = result.stderr.strip()
    raise CompileError(f"compiling the NPU instructions failed: {error}")
