"""The CI fuzz campaigns (bounded; ``python -m tests.fuzz.campaign --long`` runs thousands):
every case in its own child process with a timeout, outcomes checked against the gates."""

from __future__ import annotations

from . import campaign

SEED = 0


def test_malformed_models_end_in_lepton_errors_naming_the_node():
    s = campaign.malformed(campaign.CI_SIZES["malformed"], SEED)
    assert s["cases"] >= 300
    # Never a crash, a hang, another exception type or a wrong answer.
    assert s["failures"] == {}, s["failures"]
    assert set(s["outcomes"]) <= {"lepton-error", "compiled-correct"}
    assert s["outcomes"]["lepton-error"] >= 0.8 * s["cases"]  # the mutations do break models
    # Node-level faults name the node where the fault is or where it surfaces.
    assert s["node_faults"] >= 150
    assert s["node_faults_naming_a_node"] >= 0.95 * s["node_faults"]
    assert s["node_faults_naming_the_mutated_node"] >= 0.9 * s["node_faults"]
