"""The thin runtime: runs without the compiler, verifies everything before loading kernels."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

import lepton_runtime
from lepton_runtime import format as fmt
from lepton_runtime import session as session_module
from lepton_runtime.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    UnsafeArchiveError,
    UnsupportedArtifactError,
)

from .conftest import run_runtime_only


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _write(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _resign(members: dict[str, bytes], manifest: dict) -> dict[str, bytes]:
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return {**members, fmt.MANIFEST: raw,
            fmt.MANIFEST_DIGEST: hashlib.sha256(raw).hexdigest().encode() + b"\n"}


def _with_plan(members: dict[str, bytes], plan: dict) -> dict[str, bytes]:
    """``members`` with ``plan`` as plan.json and its hash in a re-signed manifest."""
    data = json.dumps(plan).encode()
    manifest = json.loads(members[fmt.MANIFEST])
    manifest["members"][fmt.PLAN] = {"sha256": hashlib.sha256(data).hexdigest(),
                                     "size": len(data)}
    return _resign({**members, fmt.PLAN: data}, manifest)


@pytest.fixture()
def no_kernel_load(monkeypatch):
    """Fail the test if kernels.so is ever handed to the loader."""
    def refuse(path, data):
        raise AssertionError("kernels.so was loaded before the artifact was verified")

    monkeypatch.setattr(session_module, "_load_kernels", refuse)


def test_runtime_only_process_matches_compiled_model(cnn_compiled, cnn_artifact, tmp_path):
    _, x, compiled = cnn_compiled
    expected = compiled(x)
    np.save(tmp_path / "x.npy", x.numpy())
    result = run_runtime_only(f"""
        import numpy as np, lepton_runtime
        for blocked in ("tvm", "torch", "onnx"):
            try:
                __import__(blocked)
            except ImportError:
                pass
            else:
                raise SystemExit(f"{{blocked}} is importable")
        s = lepton_runtime.load({str(cnn_artifact)!r})
        np.save({str(tmp_path / "y.npy")!r}, s.run(np.load({str(tmp_path / "x.npy")!r})))
    """)
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), expected)  # bit for bit


def test_parallel_kernels_run_under_tvm_ffi_alone(tmp_path):
    """A conv with parallel loops, loaded without libtvm_runtime: no segfault, right answer."""
    import torch

    import lepton_compiler

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 32, 3, padding=1), torch.nn.ReLU()).eval()
    x = torch.randn(1, 8, 28, 28)
    compiled = lepton_compiler.build(model, (x,))
    kernels = _members(compiled.export(tmp_path / "p.lepton"))[fmt.KERNELS]
    assert b"__TVMBackendParallelLaunch" in kernels  # the kernels really launch in parallel
    np.save(tmp_path / "x.npy", x.numpy())
    result = run_runtime_only(f"""
        import os, numpy as np, lepton_runtime
        os.environ["LEPTON_NUM_THREADS"] = "2"
        s = lepton_runtime.load({str(tmp_path / "p.lepton")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        for _ in range(20):
            y = s.run(x)
        np.save({str(tmp_path / "y.npy")!r}, y)
    """)
    assert result.returncode == 0, result.stderr  # a null launch pointer would be SIGSEGV
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(np.load(tmp_path / "y.npy") - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("member", fmt.ALL_MEMBERS)
def test_flipped_byte_in_any_member_is_refused_before_loading(cnn_artifact, member, tmp_path,
                                                               no_kernel_load):
    members = _members(cnn_artifact)
    data = bytearray(members[member])
    pos = len(data) // 2
    data[pos] ^= 0x01
    members[member] = bytes(data)
    bad = _write(tmp_path / "bad.lepton", members)
    with pytest.raises(ArtifactIntegrityError, match=r"modified or corrupted|fails its sha256"):
        lepton_runtime.load(bad)


def test_unknown_format_version_names_supported_versions(cnn_artifact, tmp_path, no_kernel_load):
    members = _members(cnn_artifact)
    manifest = json.loads(members[fmt.MANIFEST])
    manifest["format_version"] = 99
    bad = _write(tmp_path / "v99.lepton", _resign(members, manifest))
    expected = r"version 99 .* reads format version\(s\) 1"
    with pytest.raises(UnsupportedArtifactError, match=expected):
        lepton_runtime.load(bad)


def test_unknown_abi_is_refused(cnn_artifact, tmp_path, no_kernel_load):
    members = _members(cnn_artifact)
    manifest = json.loads(members[fmt.MANIFEST])
    manifest["abi"] = "tvm-ffi-9"
    with pytest.raises(UnsupportedArtifactError, match="ABI 'tvm-ffi-9'"):
        lepton_runtime.load(_write(tmp_path / "abi.lepton", _resign(members, manifest)))


def test_foreign_platform_is_refused(cnn_artifact, tmp_path, no_kernel_load):
    members = _members(cnn_artifact)
    manifest = json.loads(members[fmt.MANIFEST])
    manifest["target"]["machine"] = "riscv64"
    with pytest.raises(UnsupportedArtifactError, match=r"built for .*riscv64"):
        lepton_runtime.load(_write(tmp_path / "rv.lepton", _resign(members, manifest)))


def test_missing_cpu_feature_is_refused(cnn_artifact, tmp_path, no_kernel_load):
    members = _members(cnn_artifact)
    manifest = json.loads(members[fmt.MANIFEST])
    manifest["target"]["cpu_features"] = ["avx2", "lepton_imaginary_isa"]
    with pytest.raises(UnsupportedArtifactError, match="lepton_imaginary_isa"):
        lepton_runtime.load(_write(tmp_path / "isa.lepton", _resign(members, manifest)))


def test_member_named_dotdot_is_refused(cnn_artifact, tmp_path, no_kernel_load):
    evil = tarfile.TarInfo("../x")
    evil.size = 1
    bad = _write(tmp_path / "evil.lepton", _members(cnn_artifact), [evil])
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./x' escapes"):
        lepton_runtime.load(bad)


@pytest.mark.parametrize("kind", ["absolute", "symlink", "hardlink", "device", "extra"])
def test_other_unsafe_or_unexpected_members(cnn_artifact, tmp_path, kind, no_kernel_load):
    info = tarfile.TarInfo({"absolute": "/etc/x", "extra": "notes.txt"}.get(kind, "link"))
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, fmt.PLAN
    elif kind == "device":
        info.type = tarfile.CHRTYPE
    else:
        info.size = 3
    bad = _write(tmp_path / f"{kind}.lepton", _members(cnn_artifact), [info])
    expected = ArtifactIntegrityError if kind == "extra" else UnsafeArchiveError
    with pytest.raises(expected, match=r"absolute|link|device|unexpected member"):
        lepton_runtime.load(bad)


def test_truncated_and_missing_artifacts(cnn_artifact, tmp_path, no_kernel_load):
    data = cnn_artifact.read_bytes()
    (tmp_path / "half.lepton").write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError):
        lepton_runtime.load(tmp_path / "half.lepton")
    with pytest.raises(ArtifactError, match="no such artifact"):
        lepton_runtime.load(tmp_path / "absent.lepton")
    members = _members(cnn_artifact)
    del members[fmt.WEIGHTS]
    with pytest.raises(ArtifactIntegrityError, match="missing member"):
        lepton_runtime.load(_write(tmp_path / "noweights.lepton", members))


def test_plan_pointing_outside_the_arena_is_refused(cnn_artifact, tmp_path, no_kernel_load):
    members = _members(cnn_artifact)
    plan = json.loads(members[fmt.PLAN])
    arena = next(t for t in plan["tensors"] if t["kind"] == "arena")
    arena["offset"] = plan["arena_bytes"] + 64
    with pytest.raises(ArtifactError, match="outside its buffer"):
        lepton_runtime.load(_write(tmp_path / "plan.lepton", _with_plan(members, plan)))


def test_inspect_describes_without_loading(cnn_artifact, no_kernel_load):
    info = lepton_runtime.inspect(cnn_artifact)
    assert info["manifest"]["format_version"] == fmt.FORMAT_VERSION
    assert set(info["members"]) == set(fmt.ALL_MEMBERS)
    assert len(info["calls"]) >= len(info["manifest"]["kernels"]) > 0


def test_export_is_deterministic(cnn_compiled, tmp_path):
    _, _, compiled = cnn_compiled
    a = compiled.export(tmp_path / "a.lepton").read_bytes()
    b = compiled.export(tmp_path / "b.lepton").read_bytes()
    assert a == b


def test_concurrent_runs_are_serialised_and_correct(cnn_compiled):
    """The plan reuses one arena: calls from several threads must not interleave."""
    import threading

    _, x, compiled = cnn_compiled
    inputs = [x.numpy() * scale for scale in (0.5, 1.0, 2.0, -1.0)]
    expected = [compiled(v) for v in inputs]
    failures = []

    def worker(k: int) -> None:
        for _ in range(10):
            if not np.array_equal(compiled(inputs[k]), expected[k]):
                failures.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
