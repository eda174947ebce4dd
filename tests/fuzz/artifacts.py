"""Seeded mutations of a valid artifact (a tar of manifest, digest, plan, weights, kernels)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile


def _members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return [(info, tar.extractfile(info).read() if info.isfile() else b"")
                for info in tar.getmembers()]


def _pack(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info = _copy(info)
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return out.getvalue()


def _copy(info: tarfile.TarInfo) -> tarfile.TarInfo:
    new = tarfile.TarInfo(info.name)
    new.size, new.mode, new.mtime, new.type = info.size, info.mode, info.mtime, info.type
    new.linkname = info.linkname
    return new


def _content_spans(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges that carry meaning: member headers and member data (not tar padding)."""
    spans = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar.getmembers():
            spans.append((info.offset, info.offset_data))   # header blocks
            spans.append((info.offset_data, info.offset_data + info.size))
    return [s for s in spans if s[1] > s[0]]


def bit_flip(data, rng):
    buf = bytearray(data)
    spans = _content_spans(data)
    for _ in range(rng.randint(1, 4)):
        lo, hi = rng.choice(spans)
        buf[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
    return bytes(buf)


def truncate(data, rng):
    end = max(e for _, e in _content_spans(data))
    return data[:rng.randrange(0, end)]


def swap_members(data, rng):
    members = _members(data)
    i, j = rng.sample(range(len(members)), 2)
    (a, da), (b, db) = members[i], members[j]
    members[i], members[j] = (a, db), (b, da)  # names stay, contents trade places
    return _pack(members)


def extra_member(data, rng):
    members = _members(data)
    info = tarfile.TarInfo(rng.choice(["extra.bin", "kernels2.so", "manifest.json",
                                       "plan.json", "../escape", "/abs/path", "dir/x"]))
    members.insert(rng.randrange(len(members) + 1), (info, b"\x7fELF payload"))
    return _pack(members)


def drop_member(data, rng):
    members = _members(data)
    del members[rng.randrange(len(members))]
    return _pack(members)


def link_member(data, rng):
    members = _members(data)
    i = rng.randrange(len(members))
    info = _copy(members[i][0])
    info.type = rng.choice([tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.DIRTYPE])
    info.linkname = "/etc/passwd"
    members[i] = (info, b"")
    return _pack(members)


def edit_manifest(data, rng):
    """A manifest field changed; half the time manifest.sha256 is recomputed to match, so
    the edit must be caught by what the field means, not by the digest."""
    members = _members(data)
    index = {info.name: k for k, (info, _) in enumerate(members)}
    manifest = json.loads(members[index["manifest.json"]][1])
    recompute = rng.random() < 0.5
    edits = ["format", "abi", "member_sha", "member_size", "drop_key", "members_type",
             "target"]
    edit = rng.choice(edits)
    if edit == "format":
        key = next((k for k in manifest if "format" in k), None) or "format_version"
        manifest[key] = rng.choice([0, 2, 99, "1", None])
    elif edit == "abi":
        key = next((k for k in manifest if "abi" in k), None) or "abi"
        manifest[key] = rng.choice(["tvm-ffi-9", "", 7])
    elif edit in ("member_sha", "member_size"):
        name = rng.choice(sorted(manifest["members"]))
        field = "sha256" if edit == "member_sha" else "size"
        value = manifest["members"][name][field]
        manifest["members"][name][field] = hashlib.sha256(b"x").hexdigest() \
            if field == "sha256" else value + rng.choice([-1, 1, 4096])
    elif edit == "drop_key":
        del manifest[rng.choice(sorted(manifest))]
    elif edit == "members_type":
        manifest["members"] = rng.choice([[], "x", None, {}])
    else:
        key = next((k for k in manifest if "target" in k), None) or "target"
        manifest[key] = rng.choice([{"kind": "gpu"}, "lepton", None, {"cpu_features": ["zz"]}])
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    members[index["manifest.json"]] = (members[index["manifest.json"]][0], raw)
    if recompute:
        k = index["manifest.sha256"]
        members[k] = (members[k][0], hashlib.sha256(raw).hexdigest().encode())
    return _pack(members)


MUTATIONS = {f.__name__: f for f in (bit_flip, truncate, swap_members, extra_member,
                                     drop_member, link_member, edit_manifest)}


def cases(data: bytes, count: int, seed: int):
    """``count`` mutated artifacts: (case id, bytes, mutation)."""
    rng = random.Random(seed)
    kinds = sorted(MUTATIONS)
    for i in range(count):
        kind = kinds[i % len(kinds)]
        yield f"{seed}-{i}", MUTATIONS[kind](data, rng), kind
