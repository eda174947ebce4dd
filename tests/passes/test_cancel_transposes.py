"""CancelTransposes: Before/Expected structure for each way a transpose moves, the
nothing-to-cancel cases, and the numbers (the pass must not change what the model computes)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from lepton_compiler.passes.cancel_transposes import CancelTransposes

from .relax_eval import evaluate

NHWC = (1, 4, 5, 8)
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _module(body, shape=NHWC):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def _clean(mod):
    return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))


def _sandwich(second_axes):
    def body(bb, x):
        a = bb.emit(relax.op.permute_dims(x, TO_NCHW))
        b = bb.emit(relax.op.clip(a, 0.0, 6.0))
        return relax.op.permute_dims(b, second_axes)
    return _module(body)


def test_transposes_that_cancel_around_clip_are_removed():
    after = _clean(CancelTransposes()(_sandwich(TO_NHWC)))
    tvm.ir.assert_structural_equal(after, _module(lambda bb, x: relax.op.clip(x, 0.0, 6.0)))


def test_a_transpose_sinks_through_clip_and_pad_with_the_pad_widths_permuted():
    def before(bb, x):
        a = bb.emit(relax.op.permute_dims(x, TO_NCHW))
        b = bb.emit(relax.op.clip(a, 0.0, 6.0))
        c = bb.emit(relax.op.nn.pad(b, [0, 0, 0, 0, 0, 1, 2, 3], "constant", 0.0))
        d = bb.emit(relax.op.multiply(c, relax.const(2.0, "float32")))
        return relax.op.permute_dims(d, TO_NHWC)

    def expected(bb, x):
        b = bb.emit(relax.op.clip(x, 0.0, 6.0))
        c = bb.emit(relax.op.nn.pad(b, [0, 0, 0, 1, 2, 3, 0, 0], "constant", 0.0))
        return relax.op.multiply(c, relax.const(2.0, "float32"))

    mod = _module(before)
    after = _clean(CancelTransposes()(mod))
    tvm.ir.assert_structural_equal(after, _module(expected))
    x = np.random.default_rng(0).standard_normal(NHWC).astype(np.float32) * 4
    np.testing.assert_array_equal(evaluate(after["main"], x), evaluate(mod["main"], x))


def test_transposes_that_do_not_cancel_compose_into_one():
    mod = _sandwich([0, 1, 3, 2])  # NCHW -> NCWH: together with the first, one transpose

    def expected(bb, x):
        b = bb.emit(relax.op.clip(x, 0.0, 6.0))
        return relax.op.permute_dims(b, [0, 3, 2, 1])

    after = _clean(CancelTransposes()(mod))
    tvm.ir.assert_structural_equal(after, _module(expected))
    x = np.random.default_rng(1).standard_normal(NHWC).astype(np.float32) * 4
    np.testing.assert_array_equal(evaluate(after["main"], x), evaluate(mod["main"], x))


def test_a_transpose_read_by_two_ops_that_commute_moves_below_both():
    def before(bb, x):
        a = bb.emit(relax.op.permute_dims(x, TO_NCHW))
        b = bb.emit(relax.op.clip(a, 0.0, 6.0))
        c = bb.emit(relax.op.add(b, a))  # both operands transposed the same way
        return relax.op.permute_dims(c, TO_NHWC)

    def expected(bb, x):
        b = bb.emit(relax.op.clip(x, 0.0, 6.0))
        return relax.op.add(b, x)

    mod = _module(before)
    after = _clean(CancelTransposes()(mod))
    tvm.ir.assert_structural_equal(after, _module(expected))
    x = np.random.default_rng(2).standard_normal(NHWC).astype(np.float32) * 4
    np.testing.assert_array_equal(evaluate(after["main"], x), evaluate(mod["main"], x))


def test_a_max_pool_in_nchw_between_transposes_becomes_an_nhwc_pool():
    def before(bb, x):
        a = bb.emit(relax.op.permute_dims(x, TO_NCHW))
        b = bb.emit(relax.op.nn.max_pool2d(a, [2, 2], [2, 2], layout="NCHW"))
        return relax.op.permute_dims(b, TO_NHWC)

    def expected(bb, x):
        return relax.op.nn.max_pool2d(x, [2, 2], [2, 2], [0, 0, 0, 0], [1, 1], False, False,
                                      "NHWC", "NHWC")

    shape = (1, 4, 6, 8)
    after = _clean(CancelTransposes()(_module(before, shape)))
    tvm.ir.assert_structural_equal(after, _module(expected, shape))


def test_a_transpose_before_another_op_or_handed_out_stays():
    def other_op(bb, x):
        a = bb.emit(relax.op.permute_dims(x, TO_NCHW))
        b = bb.emit(relax.op.clip(a, 0.0, 6.0))
        return relax.op.add(relax.op.sum(a, axis=[1], keepdims=True), b)  # sum: no rule

    def handed_out(bb, x):
        return relax.op.permute_dims(x, TO_NCHW)

    for body in (other_op, handed_out):
        before = _clean(_module(body))
        tvm.ir.assert_structural_equal(_clean(CancelTransposes()(before)), before)
    assert CancelTransposes().info.name == "lepton.CancelTransposes"
