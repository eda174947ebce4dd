"""The arena planner never overlaps buffers that are live at the same time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lepton_compiler.lower.memory_plan import Interval, find_overlap, plan_arena
from lepton_runtime.format import ALIGNMENT

intervals = st.lists(
    st.tuples(st.integers(0, 5000), st.integers(0, 30), st.integers(0, 10)).map(
        lambda t: Interval(size=t[0], start=t[1], end=t[1] + t[2])
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(intervals)
def test_live_buffers_never_overlap(buffers):
    offsets, total = plan_arena(buffers)
    for i, a in enumerate(buffers):
        assert offsets[i] % ALIGNMENT == 0
        assert offsets[i] + a.size <= total
        for j in range(i):
            b = buffers[j]
            if a.start <= b.end and b.start <= a.end and a.size and b.size:
                assert offsets[i] + a.size <= offsets[j] or offsets[j] + b.size <= offsets[i]


def test_disjoint_lifetimes_share_memory():
    offsets, total = plan_arena([Interval(1024, 0, 1), Interval(1024, 2, 3)])
    assert offsets == [0, 0] and total == 1024


def test_find_overlap_detects_a_clash():
    buffers = [Interval(128, 0, 2), Interval(128, 1, 3)]
    assert find_overlap(buffers, [0, 64]) == (0, 1)
    assert find_overlap(buffers, [0, 128]) is None
