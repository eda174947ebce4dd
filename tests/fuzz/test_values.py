"""The CI value campaign: run-time values no artifact may trust (issue 16), each case in its
own child process with a timeout, compared with onnxruntime."""

from __future__ import annotations

from . import campaign

SEED = 0


def test_untrusted_values_never_crash_and_indices_agree_with_onnxruntime():
    s = campaign.values(campaign.CI_SIZES["values"], campaign.CI_SIZES["float_values"], SEED)
    assert s["signals_or_hangs"] == []
    index = s["by_family"]["index"]
    # Every index/divisor case: the same answer as onnxruntime, or both refuse the values.
    assert set(index) <= {"agree", "both-refuse"}, s["failures"]
    assert sum(index.values()) >= 300
    assert index.get("both-refuse", 0) >= 100 and index.get("agree", 0) >= 100
    # NaN/Inf/huge floats: never a signal, a hang or an exception that is not a LeptonError.
    floats = s["by_family"]["float"]
    assert set(floats) <= {"agree", "agree-reference", "agree-overflow", "disagrees",
                           "both-refuse"}, s["failures"]
    assert sum(floats.values()) >= 60
    # +-Inf inputs (which become NaN inside the graphs) agree with onnxruntime: NaN passes
    # through every clamp (lepton.PropagateNaN). NaN/huge inputs still differ on a few
    # BatchNorm/MaxPool/reduction graphs, reported in the summary (see docs/SAFETY.md).
    mutations = s["by_mutation"]
    assert not mutations.get("float:inf:disagrees") and \
        not mutations.get("float:-inf:disagrees"), mutations
