"""Safe reading of Lepton artifact archives: member checks and hash verification."""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from . import format as fmt
from .errors import ArtifactError, ArtifactIntegrityError, UnsafeArchiveError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    """One verified archive member: where its bytes live inside the artifact file."""

    name: str
    offset: int
    size: int


def _check_member_safe(path: Path, info: tarfile.TarInfo) -> None:
    name = info.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{path}: member {name!r} has an absolute path; refusing it")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeArchiveError(f"{path}: member {name!r} escapes the archive with '..'")
    if info.issym() or info.islnk():
        raise UnsafeArchiveError(f"{path}: member {name!r} is a link; artifacts hold files only")
    if info.isdev() or info.ischr() or info.isblk() or info.isfifo():
        raise UnsafeArchiveError(f"{path}: member {name!r} is a device or fifo; refusing it")
    if not info.isfile():
        raise UnsafeArchiveError(f"{path}: member {name!r} is not a regular file")


def list_members(path: Path) -> dict[str, Member]:
    """Open the archive, check every member is safe and expected, and return where each lies."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            infos = tar.getmembers()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such artifact file") from None
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArtifactError(
            f"{path}: not a readable Lepton artifact ({err}); re-export it with `lepton compile`"
        ) from None
    members: dict[str, Member] = {}
    for info in infos:
        _check_member_safe(path, info)
        if info.name in members:
            raise ArtifactIntegrityError(f"{path}: member {info.name!r} appears twice")
        if info.name not in fmt.ALL_MEMBERS:
            raise ArtifactIntegrityError(
                f"{path}: unexpected member {info.name!r}; a v{fmt.FORMAT_VERSION} artifact holds "
                f"only {', '.join(fmt.ALL_MEMBERS)}"
            )
        members[info.name] = Member(info.name, info.offset_data, info.size)
    missing = [name for name in fmt.ALL_MEMBERS if name not in members]
    if missing:
        raise ArtifactIntegrityError(f"{path}: missing member(s) {', '.join(missing)}")
    return members


def read_member(path: Path, member: Member) -> bytes:
    """Read one member's bytes."""
    with open(path, "rb") as f:
        f.seek(member.offset)
        data = f.read(member.size)
    if len(data) != member.size:
        raise ArtifactError(f"{path}: member {member.name!r} is truncated")
    return data


def sha256_of_member(path: Path, member: Member) -> str:
    """Stream a member through sha256."""
    digest = hashlib.sha256()
    remaining = member.size
    with open(path, "rb") as f:
        f.seek(member.offset)
        while remaining:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                raise ArtifactError(f"{path}: member {member.name!r} is truncated")
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def read_manifest(path: Path, members: dict[str, Member]) -> dict:
    """Read manifest.json, check it against manifest.sha256, and parse it."""
    raw = read_member(path, members[fmt.MANIFEST])
    recorded = read_member(path, members[fmt.MANIFEST_DIGEST]).decode("ascii", "replace").strip()
    if hashlib.sha256(raw).hexdigest() != recorded:
        raise ArtifactIntegrityError(
            f"{path}: {fmt.MANIFEST} does not match {fmt.MANIFEST_DIGEST}; the artifact was "
            "modified or corrupted — re-export it"
        )
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: {fmt.MANIFEST} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: {fmt.MANIFEST} must hold a JSON object")
    return manifest


def verify_members(path: Path, members: dict[str, Member], manifest: dict) -> None:
    """Check the sha256 and size of every hashed member against the manifest."""
    recorded = manifest.get("members")
    if not isinstance(recorded, dict) or set(recorded) != set(fmt.HASHED_MEMBERS):
        raise ArtifactIntegrityError(
            f"{path}: manifest must list sha256 for exactly {', '.join(fmt.HASHED_MEMBERS)}"
        )
    for name in fmt.HASHED_MEMBERS:
        entry = recorded[name]
        member = members[name]
        if not isinstance(entry, dict) or entry.get("size") != member.size:
            raise ArtifactIntegrityError(
                f"{path}: member {name!r} has size {member.size}, manifest says "
                f"{entry.get('size') if isinstance(entry, dict) else entry!r}"
            )
        if sha256_of_member(path, member) != entry.get("sha256"):
            raise ArtifactIntegrityError(
                f"{path}: member {name!r} fails its sha256 check; the artifact was modified or "
                "corrupted — re-export it"
            )
