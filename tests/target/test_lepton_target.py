"""``target="lepton"`` resolves to a TVM target that carries the spec's identity."""

from __future__ import annotations

from lepton_compiler.target.lepton_target import is_lepton_target, resolve_lepton
from lepton_compiler.target.spec import load_spec


def test_lepton_target_carries_spec_identity():
    target = resolve_lepton()
    tvm_target = target.tvm_target()
    assert is_lepton_target(tvm_target)
    assert tvm_target.kind.name == "llvm"
    import tvm

    assert target.tag.startswith("lepton/lepton-v1-") and target.tag in tvm.target.list_tags()
    again = resolve_lepton().tvm_target()  # registration is idempotent
    assert str(again.attrs["model"]) == str(tvm_target.attrs["model"])
    assert str(tvm_target.attrs["model"]) == f"lepton-v1-{load_spec().fingerprint()}"
    manifest = target.manifest()
    assert manifest["kind"] == "lepton"
    assert manifest["spec_fingerprint"] == load_spec().fingerprint()


def test_other_spec_changes_the_target():
    data = load_spec().to_dict()
    data["machine"]["name"] = "lepton-small"
    data["matrix"].update(tile_m=8, tile_n=8, tile_k=8)
    target = resolve_lepton(data)
    assert str(target.tvm_target().attrs["model"]).startswith("lepton-small-")
    assert target.model != resolve_lepton().model


def test_host_target_is_not_lepton():
    from lepton_compiler.target.host import resolve_host

    assert not is_lepton_target(resolve_host().tvm_target())
