"""The Lepton NPU spec: loading, derived properties, fingerprint, and every SpecError."""

from __future__ import annotations

import copy
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lepton_compiler.errors import SpecError
from lepton_compiler.target.spec import LeptonSpec, load_spec, spec_from_dict


@pytest.fixture(scope="module")
def v1() -> LeptonSpec:
    return load_spec()


def _data(v1: LeptonSpec) -> dict:
    return copy.deepcopy(v1.to_dict())


def test_bundled_v1_matches_the_architecture(v1):
    assert v1.name == "lepton-v1"
    assert (v1.matrix.tile_m, v1.matrix.tile_n, v1.matrix.tile_k) == (16, 16, 16)
    assert v1.matrix.macs_per_cycle == 256
    assert v1.peak_macs_per_second == 256 * 10**9
    assert (v1.sram.input_bytes, v1.sram.weight_bytes, v1.sram.accumulator_bytes) == (
        64 * 1024, 256 * 1024, 64 * 1024)
    assert v1.dma.cycles(32) == 64 + 1 and v1.dma.cycles(0) == 64
    assert v1.vector.lanes == 16


def test_spec_is_frozen(v1):
    with pytest.raises(AttributeError):
        v1.matrix.tile_m = 8


def test_fingerprint_is_stable_and_sensitive(v1, tmp_path):
    again = spec_from_dict(_data(v1))
    assert again.fingerprint() == v1.fingerprint() and len(v1.fingerprint()) == 16
    data = _data(v1)
    data["dma"]["fixed_cycles"] = 65
    assert spec_from_dict(data).fingerprint() != v1.fingerprint()


def test_user_spec_file_with_another_tile(tmp_path):
    text = resources.files("lepton_compiler.target").joinpath("lepton_v1.toml").read_text()
    path = tmp_path / "small.toml"
    path.write_text(text.replace("tile_m = 16", "tile_m = 8").replace("tile_n = 16", "tile_n = 8")
                    .replace("tile_k = 16", "tile_k = 8"))
    small = load_spec(path)
    assert small.matrix.macs_per_cycle == 64
    assert small.fingerprint() != load_spec().fingerprint()


@pytest.mark.parametrize("tile", [0, -16, 12, 24])
def test_tile_must_be_a_positive_power_of_two(v1, tile):
    data = _data(v1)
    data["matrix"]["tile_n"] = tile
    with pytest.raises(SpecError, match=r"matrix\.tile_n: must be a positive power of two"):
        spec_from_dict(data)


def test_sram_too_small_for_one_tile(v1):
    data = _data(v1)
    data["sram"]["accumulator_bytes"] = 16 * 16 * 4 - 1
    with pytest.raises(SpecError, match=r"sram.accumulator_bytes: 1023 bytes cannot hold one"):
        spec_from_dict(data)


def test_unknown_key_and_section(v1):
    data = _data(v1)
    data["matrix"]["tile_q"] = 4
    with pytest.raises(SpecError, match=r"unknown key\(s\) matrix.tile_q"):
        spec_from_dict(data)
    data = _data(v1)
    data["cache"] = {"bytes": 1}
    with pytest.raises(SpecError, match=r"unknown section\(s\) \[cache\]"):
        spec_from_dict(data)


def test_missing_key_and_section(v1):
    data = _data(v1)
    del data["dma"]["fixed_cycles"]
    with pytest.raises(SpecError, match=r"missing key\(s\) dma.fixed_cycles"):
        spec_from_dict(data)
    data = _data(v1)
    del data["vector"]
    with pytest.raises(SpecError, match=r"section \[vector\] is missing"):
        spec_from_dict(data)


def test_wrong_types_and_values(v1):
    data = _data(v1)
    data["sram"]["input_bytes"] = "64k"
    with pytest.raises(SpecError, match=r"sram\.input_bytes must be an integer"):
        spec_from_dict(data)
    data = _data(v1)
    data["vector"]["ops"] = ["add", "fma"]
    with pytest.raises(SpecError, match=r"vector.ops: unknown op\(s\) fma"):
        spec_from_dict(data)
    data = _data(v1)
    data["matrix"]["input_dtype"] = "float32"
    with pytest.raises(SpecError, match=r"matrix\.input_dtype"):
        spec_from_dict(data)


def test_bad_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[matrix\ntile_m = 16")
    with pytest.raises(SpecError, match=r"bad.toml: not valid TOML"):
        load_spec(bad)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 7), st.integers(0, 7), st.integers(0, 7))
def test_power_of_two_tiles_are_accepted_when_sram_fits(v1, m, n, k):
    data = _data(v1)
    data["matrix"].update(tile_m=2**m, tile_n=2**n, tile_k=2**k)
    data["sram"].update(input_bytes=2 ** (m + k), weight_bytes=2 ** (k + n),
                        accumulator_bytes=4 * 2 ** (m + n))
    spec = spec_from_dict(data)
    assert spec.matrix.macs_per_cycle == 2 ** (m + n)
