"""Host schedule parameters and fallback pricing come from the resolved CPU's features."""

import pytest

from lepton_compiler.target.host import HostTarget
from lepton_compiler.target.host_schedule import (
    VECTOR_FEATURES,
    HostScheduleConfig,
    HostThroughput,
)


@pytest.mark.parametrize("features, lanes, budget", [
    ({"avx512f", "avx"}, 16, 24),
    ({"avx"}, 8, 12),
    (set(), 4, 12),
])
def test_lanes_and_registers_follow_the_widest_vector_unit(features, lanes, budget):
    config = HostScheduleConfig.for_features(features)
    assert (config.vector_lanes, config.accumulator_budget) == (lanes, budget)


def test_a_resolved_host_uses_its_own_flags():
    avx2 = HostTarget("x86-64-v3", 2, ("avx", "avx2", "fma"))
    avx512 = HostTarget("x86-64-v4", 2, ("avx", "avx2", "fma", "avx512f"))
    assert HostScheduleConfig.for_host(avx2).vector_lanes == 8
    assert HostScheduleConfig.for_host(avx512).vector_lanes == 16
    assert avx2.features(VECTOR_FEATURES) == {"avx"}


def test_a_named_cpu_is_read_from_llvm_cpu_table():
    assert HostScheduleConfig.for_host(HostTarget("skylake-avx512", 1)).vector_lanes == 16
    assert HostScheduleConfig.for_host(HostTarget("haswell", 1)).vector_lanes == 8


def test_fallback_throughput_scales_with_lanes_and_cores():
    narrow = HostThroughput.for_host(HostTarget("x86-64-v3", 2, ("avx",)))
    wide = HostThroughput.for_host(HostTarget("x86-64-v4", 2, ("avx", "avx512f")))
    wide4 = HostThroughput.for_host(HostTarget("x86-64-v4", 4, ("avx", "avx512f")))
    assert wide.macs_per_s == 2 * narrow.macs_per_s
    assert wide4.macs_per_s == 2 * wide.macs_per_s
    assert wide4.bytes_per_s == 2 * wide.bytes_per_s == 2 * narrow.bytes_per_s
