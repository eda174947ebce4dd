"""FoldBatchNorm: structure, numerics, and the nothing-matches case."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from lepton_compiler.passes import FoldBatchNorm

from .relax_eval import op_names


def _module(with_bias: bool):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype("float32")
    b = rng.standard_normal((1, 4, 1, 1)).astype("float32")
    gamma, beta = rng.random(4).astype("float32") + 0.5, rng.standard_normal(4).astype("float32")
    mean, var = rng.standard_normal(4).astype("float32"), rng.random(4).astype("float32") + 0.5
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=1))
            if with_bias:
                y = bb.emit(relax.op.add(y, relax.const(b)))
            bn = bb.emit(relax.op.nn.batch_norm(y, *(relax.const(a) for a in
                                                     (gamma, beta, mean, var)),
                                                axis=1, training=False))
            out = bb.emit_output(relax.TupleGetItem(bn, 0))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod, x):
    mod = relax.transform.DecomposeOpsForInference()(mod)
    mod = relax.transform.LegalizeOps()(mod)
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_batch_norm_is_removed_and_numerics_hold():
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype("float32")
    for with_bias in (False, True):
        before = _module(with_bias)
        after = FoldBatchNorm()(before)
        assert "relax.nn.batch_norm" in op_names(before)
        assert "relax.nn.batch_norm" not in op_names(after)
        assert op_names(after).count("relax.nn.conv2d") == 1
        np.testing.assert_allclose(_run(after, x), _run(before, x), rtol=1e-5, atol=1e-5)


def test_nothing_matches_leaves_module_unchanged():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                y = R.nn.relu(x)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldBatchNorm()(Before), Before)


def test_batch_norm_without_conv_becomes_scale_and_shift_that_stays_finite():
    rng = np.random.default_rng(2)
    gamma, beta = rng.random(4).astype("float32") * 0.3, rng.standard_normal(4).astype("float32")
    mean, var = rng.standard_normal(4).astype("float32"), rng.random(4).astype("float32") * 0.1
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 3, 3), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            bn = bb.emit(relax.op.nn.batch_norm(x, *(relax.const(a) for a in
                                                     (gamma, beta, mean, var)),
                                                axis=1, training=False))
            out = bb.emit_output(relax.TupleGetItem(bn, 0))
        bb.emit_func_output(out)
    before = bb.get()
    after = FoldBatchNorm()(before)
    assert "relax.nn.batch_norm" not in op_names(after)
    assert sorted(set(op_names(after))) == ["relax.add", "relax.multiply"]
    data = rng.standard_normal((1, 4, 3, 3)).astype("float32")
    np.testing.assert_allclose(_run(after, data), _run(before, data), rtol=1e-5, atol=1e-5)
    data[0, :, 0, 0] = 3e38  # (x - mean) / sqrt(var + eps) overflows; x * s + t need not
    expected = (data.astype(np.float64) - mean[:, None, None]) / np.sqrt(
        var[:, None, None] + 1e-5) * gamma[:, None, None] + beta[:, None, None]
    finite = np.abs(expected) < np.finfo(np.float32).max
    got = _run(after, data)
    assert np.isfinite(got[finite]).all()
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5)
