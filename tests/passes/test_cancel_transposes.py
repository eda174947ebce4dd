"""CancelTransposes: Before/Expected structure, and the nothing-matches case."""

from __future__ import annotations

import tvm
from tvm import relax

from lepton_compiler.passes.cancel_transposes import CancelTransposes


def _sandwich(second_axes):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 4, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.permute_dims(x, [0, 3, 1, 2]))
            b = bb.emit(relax.op.clip(a, 0.0, 6.0))
            c = bb.emit_output(relax.op.permute_dims(b, second_axes))
        bb.emit_func_output(c)
    return bb.get()


def _expected():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 4, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit_output(relax.op.clip(x, 0.0, 6.0))
        bb.emit_func_output(c)
    return bb.get()


def _clean(mod):
    return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))


def test_transposes_that_cancel_around_clip_are_removed():
    after = _clean(CancelTransposes()(_sandwich([0, 2, 3, 1])))
    tvm.ir.assert_structural_equal(after, _expected())


def test_nothing_matches_leaves_the_module_unchanged():
    before = _sandwich([0, 1, 3, 2])  # the second permutation does not undo the first
    tvm.ir.assert_structural_equal(_clean(CancelTransposes()(before)), _clean(before))
