"""The CI fuzz campaigns (bounded; ``python -m tests.fuzz.campaign --long`` runs thousands):
every case in its own child process with a timeout, outcomes checked against the gates."""

from __future__ import annotations

from . import campaign

SEED = 0


def test_random_graphs_agree_with_onnxruntime_and_the_integer_reference():
    s = campaign.differential(campaign.CI_SIZES["differential"], campaign.CI_SIZES["int8"],
                              SEED)
    assert s["unexplained"] == [], s["failures"]
    fp32 = s["by_kind"]["fp32"]
    assert fp32 == {"compiled-correct": campaign.CI_SIZES["differential"]}
    graphs = campaign.CI_SIZES["differential"] * campaign.GRAPHS_PER_MODEL + \
        campaign.CI_SIZES["int8"] * campaign.INT8_GRAPHS_PER_MODEL
    assert s["graphs_checked"] >= 0.85 * graphs
    opt0_models = -(-campaign.CI_SIZES["differential"] // campaign.OPT0_EVERY)
    assert s["graphs_opt_level_0_agree"] >= 0.95 * opt0_models * campaign.GRAPHS_PER_MODEL
    # int8 models either match the integer reference bit for bit or are refused because a
    # layer stays float (no integer reference for it); most must be checked.
    assert s["int8_graphs_bit_exact"] >= 0.5 * campaign.CI_SIZES["int8"] * \
        campaign.INT8_GRAPHS_PER_MODEL
    for case, message in s["refusals"].items():
        assert case.startswith("int8-") and "the integer reference covers quantized layers " \
            "only" in message, (case, message)
