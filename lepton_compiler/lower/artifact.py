"""Write a Lepton artifact: one uncompressed tar of manifest, digest, plan, weights, kernels."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from lepton_runtime import format as fmt


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def make_manifest(*, plan: dict, weights: bytes, kernels: bytes, target: dict,
                  compiler_version: str, tvm_version: str, spec_fingerprint: str | None,
                  plan_bytes: bytes, report: dict | None = None) -> dict:
    """The manifest for an artifact's members."""
    members = {
        fmt.PLAN: plan_bytes,
        fmt.WEIGHTS: weights,
        fmt.KERNELS: kernels,
    }
    tensors = plan["tensors"]

    def signature(entries: list[dict]) -> list[dict]:
        return [
            {"name": e["name"], "shape": tensors[e["tensor"]]["shape"],
             "dtype": tensors[e["tensor"]]["dtype"]}
            for e in entries
        ]

    extra = {"report": report if report is not None else {}}
    return {
        **extra,
        "format_version": fmt.FORMAT_VERSION,
        "abi": fmt.ABI,
        "compiler": {"name": "lepton-compiler", "version": compiler_version},
        "tvm_version": tvm_version,
        "target": target,
        "spec_fingerprint": spec_fingerprint,
        "inputs": signature(plan["inputs"]),
        "outputs": signature(plan["outputs"]),
        "kernels": sorted({c["kernel"] for p in [plan, *plan.get("variants", [])]
                           for c in p["calls"]}),
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in members.items()
        },
    }


def pack(*, plan: dict, weights: bytes, kernels: bytes, target: dict, compiler_version: str,
         tvm_version: str, spec_fingerprint: str | None = None,
         report: dict | None = None) -> bytes:
    """Serialise an artifact to bytes (deterministic: fixed mtimes, owners and order).

    ``report`` (the placement report, JSON-able) is kept in the manifest for
    ``lepton inspect --ops``; the runtime does not need it.
    """
    plan_bytes = _canonical(plan)
    manifest = make_manifest(
        plan=plan, weights=weights, kernels=kernels, target=target,
        compiler_version=compiler_version, tvm_version=tvm_version,
        spec_fingerprint=spec_fingerprint, plan_bytes=plan_bytes, report=report,
    )
    manifest_bytes = _canonical(manifest)
    digest = hashlib.sha256(manifest_bytes).hexdigest().encode("ascii") + b"\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (
            (fmt.MANIFEST, manifest_bytes),
            (fmt.MANIFEST_DIGEST, digest),
            (fmt.PLAN, plan_bytes),
            (fmt.WEIGHTS, weights),
            (fmt.KERNELS, kernels),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write(path: str | os.PathLike, data: bytes) -> Path:
    """Write artifact bytes atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def export_kernel(kernel: Any, path: str | os.PathLike, cpu: str | None = None) -> Path:
    """Write a stand-alone NPU kernel (``target.npu_kernels.NpuKernel``) as a one-call
    Lepton artifact for ``lepton_runtime.load``.

    Inputs are the kernel's operands (for a conv2d: NHWC input and the HWIO weights
    flattened to ``[KH*KW*Cin, Cout]``); the output is the int32 result ``[M, N]``.
    """
    from lepton_compiler import tvm_compat
    from lepton_compiler.target.lepton_target import resolve_lepton
    from lepton_compiler.target.npu_kernels import COUNTERS
    from lepton_compiler.target.npu_schedule import sim_static
    from lepton_compiler.version import __version__

    if kernel.conv is not None:
        c = kernel.conv
        operands = [("input", [c.n, c.h, c.w, c.cin]), ("weight", [kernel.plan.k, c.cout])]
    else:
        operands = [("a", [kernel.plan.m, kernel.plan.k]), ("b", [kernel.plan.k, kernel.plan.n])]
    tensors = [{"shape": shape, "dtype": "int8", "kind": "input", "index": i}
               for i, (_, shape) in enumerate(operands)]
    tensors.append({"shape": list(kernel.out_shape), "dtype": "int32", "kind": "output",
                    "index": 0})
    plan = {
        "version": 1, "arena_bytes": 0, "tensors": tensors,
        "calls": [{"kernel": kernel.entry, "args": [0, 1, 2], "ops": [kernel.entry],
                   "sim": sim_static(kernel.plan, kernel.spec)}],
        "inputs": [{"name": name, "tensor": i} for i, (name, _) in enumerate(operands)],
        "outputs": [{"name": "output", "tensor": 2}],
    }
    target = resolve_lepton(kernel.spec, cpu)
    data = pack(
        plan=plan, weights=b"", kernels=kernel.so_bytes,
        target={**target.manifest(), "sim_counters": list(COUNTERS)},
        compiler_version=__version__, tvm_version=tvm_compat.tvm_version(),
        spec_fingerprint=kernel.spec.fingerprint(),
    )
    return write(path, data)
