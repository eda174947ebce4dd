"""The CI value campaign: run-time values no artifact may trust (issue 16), each case in its
own child process with a timeout, compared with onnxruntime."""

from __future__ import annotations

from . import campaign, cases

SEED = 0


def test_untrusted_values_never_crash_and_indices_agree_with_onnxruntime():
    s = campaign.values(campaign.CI_SIZES["values"], campaign.CI_SIZES["float_values"], SEED)
    assert s["signals_or_hangs"] == []
    index = s["by_family"]["index"]
    # Every index/divisor case: the same answer as onnxruntime, or both refuse the values.
    assert set(index) <= {"agree", "both-refuse"}, s["failures"]
    assert sum(index.values()) >= 300
    assert index.get("both-refuse", 0) >= 100 and index.get("agree", 0) >= 100
    # NaN/Inf/huge floats: never a signal, a hang or an exception that is not a LeptonError,
    # and every output agrees with onnxruntime, or differs only where the answer is
    # implementation-defined (see cases.FLOAT_VERDICTS and docs/SAFETY.md).
    floats = s["by_family"]["float"]
    assert "disagrees" not in floats, s["failures"]
    assert set(floats) <= set(cases.FLOAT_VERDICTS) | {"both-refuse"}, s["failures"]
    assert sum(floats.values()) >= 60
    assert floats.get("agree", 0) >= 30, floats
    # The exemptions are narrow: +-Inf inputs agree outright.
    mutations = s["by_mutation"]
    assert set(k for k in mutations if k.startswith("float:inf") or k.startswith("float:-inf")) \
        <= {"float:inf:agree", "float:-inf:agree"}, mutations


def test_the_float_verdicts_exempt_only_implementation_defined_answers():
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    def model(op, **attrs):
        graph = helper.make_graph(
            [helper.make_node(op, ["x"], ["y"], **attrs)], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                 ir_version=10).SerializeToString()

    pool = model("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    sess = ort.InferenceSession(pool, providers=["CPUExecutionProvider"])
    # onnxruntime and onnx.reference both drop a NaN in some window position: find one.
    for x in np.where(np.eye(4, dtype=bool), np.nan, [1, 2, 3, 4]).astype(np.float32):
        x = x.reshape(1, 1, 2, 2)
        want = sess.run(None, {"x": x})
        if np.isfinite(want[0]).all() and np.isfinite(ReferenceEvaluator(pool).run(
                None, {"x": x})[0]).all():
            break
    else:
        raise AssertionError("onnxruntime/onnx.reference keep the NaN in every position")
    verdict = cases._float_verdicts(pool, sess, {"x": x}, [np.full_like(want[0], np.nan)],
                                    want, "nan")
    assert verdict == {"y": "nan-in-max-window"}
    verdict = cases._float_verdicts(pool, sess, {"x": x}, [want[0] + 1], want, "nan")
    assert verdict == {"y": "disagrees"}
    relu = model("Relu")
    sess = ort.InferenceSession(relu, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})
    swallowed = np.nan_to_num(want[0])  # a NaN turned into a number is never accepted
    assert cases._float_verdicts(relu, sess, {"x": x}, [swallowed], want, "nan") == \
        {"y": "disagrees"}
    huge = [np.array([3e38, -2.6e38, 5.0], np.float32)]
    assert cases._float_verdicts(relu, sess, {"x": x}, [np.array([np.inf, -np.inf, 5.0],
                                 np.float32)], huge, "huge") == {"y": "agree-overflow"}
