"""This machine's measured compute peak: the bar every "% of peak" figure is against.

    python -m benchmarks.peak [--threads 2]

Independent chains of the widest fp32 FMA and int8 dot-product instructions this CPU has
(``csrc/peak.c``, compiled with the flags of the best GEMM path its features allow:
AVX-512 VNNI ``vpdpbusd``, else AVX2 ``vpmaddwd``), run on 1 and on ``threads`` threads at
once. Reports GMAC/s; the int8 figure is the NPU emulation's ceiling on this CPU, the fp32
one the host kernels'.
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "csrc" / "peak.c"


def _library(workdir: Path) -> tuple[ctypes.CDLL, str]:
    from lepton_compiler.target.host import resolve_host
    from lepton_compiler.target.npu_codegen import GEMM_PATHS, best_gemm_path

    path = best_gemm_path(resolve_host(None))
    flags = next(f for name, _, f in GEMM_PATHS if name == path)
    so = workdir / "peak.so"
    subprocess.run(["cc", "-O3", "-shared", "-fPIC", *flags, "-o", str(so), str(SOURCE)],
                   check=True)
    lib = ctypes.CDLL(str(so))
    for name in ("fma_f32", "dot_i8"):
        getattr(lib, name).restype = ctypes.c_int64
        getattr(lib, name).argtypes = [ctypes.c_int64]
    return lib, path


def _rate(fn, threads: int, iters: int = 20_000_000) -> float:
    """GMAC/s of ``fn(iters)`` run on ``threads`` threads at once (ctypes drops the GIL)."""
    fn(iters // 20)  # warm up: clocks, page faults
    macs = [0] * threads

    def work(i: int) -> None:
        macs[i] = fn(iters)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(macs) / (time.perf_counter() - start) / 1e9


def measure_peak(threads: int) -> dict:
    """{"gemm_path", "fp32_gmacs", "int8_gmacs"} per thread count (1 and ``threads``)."""
    with tempfile.TemporaryDirectory() as tmp:
        lib, path = _library(Path(tmp))
        out: dict = {"gemm_path": path}
        for n in sorted({1, threads}):
            out[f"fp32_gmacs_{n}t"] = max(_rate(lib.fma_f32, n) for _ in range(3))
            out[f"int8_gmacs_{n}t"] = max(_rate(lib.dot_i8, n) for _ in range(3))
        out["fp32_gmacs"] = out[f"fp32_gmacs_{threads}t"]
        out["int8_gmacs"] = out[f"int8_gmacs_{threads}t"]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for key, value in measure_peak(args.threads).items():
        print(f"{key:18s} {value:.1f}" if isinstance(value, float) else f"{key:18s} {value}")


if __name__ == "__main__":
    main()
