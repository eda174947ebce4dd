"""lepton.PartitionInt8: the float module becomes the planned int8 module, nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from torch import nn

from lepton_compiler import pipeline
from lepton_compiler.errors import QuantizationError
from lepton_compiler.optimize.quantization import QuantConfig
from lepton_compiler.options import BuildOptions
from lepton_compiler.passes.qgraph import read_graph
from lepton_compiler.passes.quantize import PartitionInt8, emit
from lepton_compiler.target.host import resolve_host


def _planned(skip_all=False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal((4, 16)).astype(np.float32),) for _ in range(3)]
    run = pipeline.Run(verify=True)
    mod = pipeline.front(model, calib[0], BuildOptions.create(target="lepton"), run).mod
    skip = [layer.name for layer in read_graph(mod["main"]).layers] if skip_all else []
    options = BuildOptions.create(target="lepton", quantize=QuantConfig(
        calibration_data=calib, skip=skip))
    graph, _, qg = pipeline.quantize_graph(mod, options, resolve_host(), run)
    return mod, graph, qg, calib[0][0]


def _call_tir_kernels(mod):
    return sorted(gv.name_hint for gv in mod.functions if gv.name_hint != "main")


def test_before_expected_is_the_planned_emission():
    mod, graph, qg, _ = _planned()
    npu = {layer.name for layer in graph.layers if layer.name in qg.quantized}
    after = PartitionInt8(qg, npu)(mod)
    tvm.ir.assert_structural_equal(after, emit(qg, npu_layers=npu))
    assert any(name.startswith("q_") for name in _call_tir_kernels(after))


def test_nothing_quantized_leaves_the_float_computation():
    mod, graph, qg, x = _planned(skip_all=True)
    assert not qg.quantized
    after = PartitionInt8(qg)(mod)
    assert not [name for name in _call_tir_kernels(after) if name.startswith("q_")]
    execute = pipeline.host_executor(resolve_host(), "test")
    names = (list(graph.inputs), ["y"])
    np.testing.assert_allclose(execute(after, *names)(x), execute(mod, *names)(x),
                               rtol=1e-6, atol=1e-6)


def test_a_module_that_is_not_the_planned_graph_is_refused():
    _, _, qg, _ = _planned()
    other = nn.Sequential(nn.Linear(16, 8)).eval()
    options = BuildOptions.create(target="lepton")
    foreign = pipeline.front(other, np.zeros((4, 16), np.float32), options,
                             pipeline.Run(verify=False)).mod
    with pytest.raises(QuantizationError, match=r"lepton\.PartitionInt8.*calibrate and plan"):
        PartitionInt8(qg)(foreign)


def test_the_pass_is_named_for_the_project():
    _, _, qg, _ = _planned()
    assert PartitionInt8(qg).info.name == "lepton.PartitionInt8"
