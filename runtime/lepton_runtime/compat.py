"""Checks that an artifact can run on this machine: format, ABI, platform and CPU features."""

from __future__ import annotations

import platform
import sys
from functools import lru_cache
from pathlib import Path

from . import format as fmt
from .errors import UnsupportedArtifactError


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU feature flags of this machine, or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def host_platform() -> dict[str, str]:
    """The (system, machine) pair an artifact's kernels.so must match."""
    return {"system": sys.platform, "machine": platform.machine().lower()}


# Every key of a format-1 manifest and its JSON type.
MANIFEST_SCHEMA = {
    "format_version": int, "abi": str, "compiler": dict, "tvm_version": str,
    "inputs": list, "outputs": list, "kernels": list, "members": dict, "target": dict,
    "spec_fingerprint": (str, type(None)), "report": dict,
}


def check_schema(path: Path, manifest: dict) -> None:
    """Refuse a manifest with a missing, unknown or mistyped key (an edited manifest whose
    digest was recomputed still has to be the manifest a compiler writes)."""
    from .errors import ArtifactIntegrityError

    unknown = sorted(set(manifest) - set(MANIFEST_SCHEMA))
    if unknown:
        raise ArtifactIntegrityError(f"{path}: manifest has unknown key(s) "
                                     f"{', '.join(unknown)}; re-export the model")
    for key, kind in MANIFEST_SCHEMA.items():
        if key not in manifest:
            raise ArtifactIntegrityError(f"{path}: manifest lacks {key!r}; re-export the model")
        value = manifest[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ArtifactIntegrityError(f"{path}: manifest {key!r} has the wrong type "
                                         f"({type(value).__name__}); re-export the model")


def check_manifest(path: Path, manifest: dict) -> None:
    """Refuse an artifact whose format, ABI, platform or CPU needs this runtime cannot meet."""
    version = manifest.get("format_version")
    if version not in fmt.SUPPORTED_FORMAT_VERSIONS:
        supported = ", ".join(str(v) for v in fmt.SUPPORTED_FORMAT_VERSIONS)
        raise UnsupportedArtifactError(
            f"{path}: artifact format version {version!r} is not supported; this runtime reads "
            f"format version(s) {supported}. Upgrade lepton-runtime or re-export the model."
        )
    abi = manifest.get("abi")
    if abi not in fmt.SUPPORTED_ABIS:
        raise UnsupportedArtifactError(
            f"{path}: kernel ABI {abi!r} is not supported; this runtime supports "
            f"{', '.join(fmt.SUPPORTED_ABIS)}"
        )
    target = manifest.get("target")
    if not isinstance(target, dict):
        raise UnsupportedArtifactError(f"{path}: manifest has no target description")
    here = host_platform()
    for key in ("system", "machine"):
        if target.get(key) != here[key]:
            raise UnsupportedArtifactError(
                f"{path}: kernels were built for {target.get('system')}/{target.get('machine')}, "
                f"this machine is {here['system']}/{here['machine']}; compile for this machine"
            )
    needed = target.get("cpu_features") or []
    have = cpu_flags()
    if have is not None:
        missing = sorted(set(needed) - have)
        if missing:
            raise UnsupportedArtifactError(
                f"{path}: kernels need CPU features this machine lacks: {', '.join(missing)} "
                f"(built for cpu {target.get('mcpu')!r}); recompile with a more portable cpu"
            )
    check_schema(path, manifest)
