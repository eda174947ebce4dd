"""Compile the NPU instruction implementations (C) with the spec's numbers for linking."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

from lepton_compiler.errors import CompileError
from lepton_compiler.target.spec import LeptonSpec

NPU_SOURCE = "csrc/lepton_npu.c"


def spec_defines(spec: LeptonSpec) -> list[str]:
    """The -D flags through which the C code reads the spec (it holds no numbers itself)."""
    m = spec.matrix
    return [f"-DLEPTON_TILE_M={m.tile_m}", f"-DLEPTON_TILE_N={m.tile_n}",
            f"-DLEPTON_TILE_K={m.tile_k}", f"-DLEPTON_VECTOR_LANES={spec.vector.lanes}",
            f"-DLEPTON_DMA_BYTES_PER_CYCLE={spec.dma.bytes_per_cycle}",
            f"-DLEPTON_DMA_FIXED_CYCLES={spec.dma.fixed_cycles}",
            f"-DLEPTON_VECTOR_MUL_ADD={int('mul_add' in spec.vector.ops)}",
            f"-DLEPTON_VECTOR_DIV_CYCLES={spec.vector.div_cycles}"]


#: The GEMM paths of ``lepton_npu.c``, best first: (name, the ISA features it needs in LLVM
#: spelling, the GCC/Clang flags that enable them). Chosen from the target CPU's *features*,
#: never from its name: a compiler older than the CPU still builds the fast path.
GEMM_PATHS = (
    ("avx512-vnni", ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vnni", "avx2",
                     "fma"),
     ("-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl",
      "-mavx512vnni")),
    ("avx512", ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"),
     ("-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl")),
    ("avx2", ("avx2", "fma"), ("-mavx2", "-mfma")),
    ("portable", (), ()),
)
#: /proc/cpuinfo spellings of the LLVM feature names above.
_PROC_NAMES = {"avx512vnni": "avx512_vnni"}


def best_gemm_path(host: Any) -> str:
    """The fastest GEMM path ``host`` (a HostTarget: this machine's /proc/cpuinfo flags, or
    LLVM's table for a named CPU) supports."""
    wanted = tuple({f for _, need, _ in GEMM_PATHS for f in need})
    if host.cpu_features:  # this machine: its /proc/cpuinfo flags
        have = set(host.cpu_features)
        features = {f for f in wanted if _PROC_NAMES.get(f, f) in have}
    else:
        features = host.features(wanted)
    return next(name for name, need, _ in GEMM_PATHS if set(need) <= features)


#: Objects compiled in this process, by (source, compiler options, the compiler found): a
#: build compiles the C source once per spec and GEMM path, not once per kernel library.
_OBJECTS: dict[tuple[bytes, tuple[str, ...], str], bytes] = {}


def npu_object(spec: LeptonSpec, workdir: Path, host: Any = None,
               path: str | None = None) -> tuple[str, str]:
    """Compile ``lepton_npu.c`` for ``spec`` into ``workdir``; returns the object path and
    the GEMM path it was built with (see :data:`GEMM_PATHS`).

    The path is ``path`` if given, else the best one ``host``'s CPU features allow (portable
    without a host). If the C compiler rejects its flags (a compiler older than the
    instructions), the next path down is tried, with a warning naming what was lost: never
    silently.
    """
    import logging

    import tvm_ffi.libinfo

    source = resources.files("lepton_compiler.target").joinpath(NPU_SOURCE)
    names = [name for name, _, _ in GEMM_PATHS]
    if path is not None and path not in names:
        raise ValueError(f"unknown GEMM path {path!r}; one of {names}")
    want = path or (best_gemm_path(host) if host is not None else "portable")
    error = ""
    text = source.read_bytes()
    for name, _, flags in GEMM_PATHS[names.index(want):]:
        obj = workdir / f"lepton_npu_{spec.fingerprint()}_{name}.o"
        options = ["-c", "-O3", "-fPIC", "-std=gnu11", *flags,
                   f"-I{tvm_ffi.libinfo.find_include_path()}", *spec_defines(spec)]
        key = (text, tuple(options), shutil.which("cc") or "cc")
        if key in _OBJECTS:  # compiled before in this process: the same bytes
            obj.write_bytes(_OBJECTS[key])
            return str(obj), name
        cmd = ["cc", *options, "-o", str(obj), str(source)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode == 0:
            _OBJECTS[key] = obj.read_bytes()
            if name != want:
                logging.getLogger(__name__).warning(
                    "the C compiler cannot build the %s GEMM path this CPU supports; the "
                    "artifact uses the slower %s path (%s)", want, name,
                    error.splitlines()[0] if error else "")
            return str(obj), name
        error = result.stderr.strip()
    raise CompileError(f"compiling the NPU instructions failed: {error}")
