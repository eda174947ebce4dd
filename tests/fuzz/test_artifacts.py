"""The CI fuzz campaigns (bounded; ``python -m tests.fuzz.campaign --long`` runs thousands):
every case in its own child process with a timeout, outcomes checked against the gates."""

from __future__ import annotations

from . import campaign

SEED = 0


def test_mutated_artifacts_are_refused_before_dlopen():
    s = campaign.artifacts(campaign.CI_SIZES["artifacts"], SEED)
    assert s["control_loads"]  # the unmutated artifact loads, so refusals mean something
    assert s["identical_mutants"] == 0
    mutants = s["cases"] - 3  # minus the wrong-input sessions
    assert mutants >= 200
    assert s["outcomes"] == {"lepton-error": s["cases"]}, s["failures"]
    assert s["dlopen_before_refusal"] == 0
