"""What one fuzz case does inside its child process; each returns a JSON-able outcome."""

from __future__ import annotations

from typing import Any

import numpy as np

RTOL = ATOL = 1e-5


def _inputs(infos: Any, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(i.shape).astype(i.dtype) if i.dtype.startswith("float")
            else rng.integers(-3, 4, i.shape).astype(i.dtype) for i in infos]


def _error(err: BaseException) -> dict:
    from lepton_compiler import LeptonError

    kind = "lepton-error" if isinstance(err, LeptonError) else "other-exception"
    return {"outcome": kind, "type": type(err).__name__, "message": str(err)[:2000]}


def malformed(data: bytes) -> dict:
    """Compile mutated model bytes: a LeptonError, or a model that matches onnxruntime."""
    import onnxruntime as ort

    import lepton_compiler

    try:
        compiled = lepton_compiler.build(data)
        arrays = _inputs(compiled.inputs, 0)
        got = compiled(*arrays)
    except Exception as err:
        return _error(err)
    try:
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        want = sess.run(None, dict(zip(names, arrays, strict=True)))
    except Exception as err:
        return {"outcome": "compiled-oracle-refuses", "message": str(err)[:500]}
    return _compare(got, want)


def _compare(got: Any, want: list, rtol: float = RTOL, atol: float = ATOL) -> dict:
    got = list(got) if isinstance(got, tuple) else [got]
    if len(got) != len(want):
        return {"outcome": "compiled-wrong", "message": f"{len(got)} outputs, expected "
                                                        f"{len(want)}"}
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        w = np.asarray(w)
        if g.shape != w.shape:
            return {"outcome": "compiled-wrong", "message": f"shape {g.shape} vs {w.shape}"}
        finite = np.isfinite(w)
        if not np.array_equal(np.isfinite(g), finite):
            return {"outcome": "compiled-wrong", "message": "non-finite values differ"}
        if finite.any():
            err = np.abs(g[finite].astype(np.float64) - w[finite])
            bound = atol + rtol * np.abs(w[finite])
            worst = max(worst, float(np.max(err / bound)))
    if worst > 1:
        return {"outcome": "compiled-wrong", "message": f"error {worst:.2f}x the tolerance"}
    return {"outcome": "compiled-correct", "worst": worst}


def _mapped_kernel_libraries() -> set[str]:
    with open("/proc/self/maps") as f:
        return {line.split(maxsplit=5)[-1].strip() for line in f if "lepton-kernels-" in line}


def artifact(path: str) -> dict:
    """Load a mutated artifact: it must be refused, and before any kernels.so is mapped."""
    import lepton_runtime

    before = _mapped_kernel_libraries()
    try:
        session = lepton_runtime.load(path)
    except Exception as err:
        result = _error(err)
        result["dlopen"] = bool(_mapped_kernel_libraries() - before)
        return result
    del session
    return {"outcome": "loaded", "dlopen": bool(_mapped_kernel_libraries() - before)}


def bad_inputs(path: str, seed: int) -> dict:
    """Call a valid artifact with random wrong inputs: every call is a clean InputError."""
    import lepton_runtime

    rng = np.random.default_rng(seed)
    session = lepton_runtime.load(path)
    infos = session.inputs
    kinds = []
    for trial in range(20):
        args = [rng.standard_normal(i.shape).astype(np.float32) for i in infos]
        which = rng.integers(5)
        if which == 0:
            args[0] = args[0].reshape(-1)                     # wrong rank
        elif which == 1:
            args[0] = np.zeros([d + 1 for d in infos[0].shape], np.float32)  # wrong dims
        elif which == 2:
            args[0] = args[0].astype(rng.choice(["int64", "float64", "uint8", "bool"]))
        elif which == 3:
            args = [*args, args[0]]                          # too many
        else:
            args[0] = "not an array" if rng.random() < 0.5 else None
        try:
            session.run(*args)
        except lepton_runtime.LeptonError as err:
            kinds.append(type(err).__name__)
            continue
        except Exception as err:
            return _error(err) | {"trial": trial}
        return {"outcome": "accepted-bad-input", "trial": trial, "kind": int(which)}
    return {"outcome": "lepton-error", "type": ",".join(sorted(set(kinds)))}


def differential(data: bytes, seed: int, int8: bool, opt0: bool = True) -> dict:
    """A random valid graph: Lepton host fp32 (full and opt_level 0) vs onnxruntime; and,
    with ``int8``, the lepton target's int8 build vs the numpy integer reference, bit-exact."""
    import onnxruntime as ort

    import lepton_compiler

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    infos = sess.get_inputs()
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal([int(d) for d in i.shape]).astype(np.float32) for i in infos]
    want = sess.run(None, {i.name: a for i, a in zip(infos, arrays, strict=True)})
    result: dict[str, Any] = {"outcome": "compiled-correct"}
    try:
        full = lepton_compiler.build(data)
        check = _compare(full(*arrays), want)
        if check["outcome"] != "compiled-correct":
            return check | {"stage": "fp32"}
        if opt0:
            plain = lepton_compiler.build(data, opt_level=0)
            check = _compare(plain(*arrays), want)
            if check["outcome"] != "compiled-correct":
                return check | {"stage": "opt_level=0"}
            result["opt_level_0"] = True
        if int8:
            samples = [tuple(rng.standard_normal(a.shape).astype(np.float32) for a in arrays)
                       for _ in range(4)]
            q = lepton_compiler.build(data, target="lepton",
                                      quantize=lepton_compiler.QuantConfig(
                                          calibration_data=samples))
            got, ref = q(*arrays), q.quantization.reference(*arrays)
            got = list(got) if isinstance(got, tuple) else [got]
            ref = list(ref) if isinstance(ref, tuple) else [ref]
            if not all(np.array_equal(g, r) for g, r in zip(got, ref, strict=True)):
                return {"outcome": "compiled-wrong", "stage": "int8",
                        "message": "int8 build differs from the integer reference"}
            result["int8"] = True
            result["npu_kernels"] = len(q.build_info.get("npu_kernels", []))
    except Exception as err:
        return _error(err) | {"stage": "build"}
    return result


def _outputs(value: Any) -> list[np.ndarray]:
    return list(value) if isinstance(value, tuple) else [value]


def values(path: str, model: bytes, seed: int, kind: str) -> dict:
    """Run a compiled artifact (thin runtime) and onnxruntime on the same run-time *values*.

    ``kind`` "index": the value-ops model (``value_models``) with valid inputs, one or more
    out-of-range indices, zero divisors or ``INT_MIN / -1``; "float": a random fp32 graph with
    NaN, +-Inf or huge values in its inputs. Where onnxruntime refuses, Lepton must raise a
    ``LeptonError``; where it answers, Lepton must give the same answer."""
    import onnxruntime as ort

    import lepton_runtime

    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    session = lepton_runtime.load(path)
    if kind == "index":
        from .value_models import feeds, value_ops_model

        _, inputs, others = value_ops_model()
        feed = feeds(inputs, others, rng)
        mutation = ["valid", "bad", "bad", "two-bad", "int-min"][seed % 5]
        if mutation in ("bad", "two-bad"):
            for v in rng.choice(len(inputs), 1 if mutation == "bad" else 2, replace=False):
                feed[inputs[v].name] = inputs[v].invalid(rng)[0]
        elif mutation == "int-min":
            feed["num"][::2] = np.iinfo(np.int32).min
            feed["den"][::2] = -1
            feed["mden"][::2] = -1
            feed["fnum"][::2] = np.iinfo(np.int64).min
            feed["fden"][::2] = -1
    else:
        mutation = ["nan", "inf", "-inf", "huge"][seed % 4]
        special = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": 3e38}[mutation]
        feed = {}
        for info in sess.get_inputs():
            array = rng.standard_normal([int(d) for d in info.shape]).astype(np.float32)
            flat = array.reshape(-1)
            flat[rng.integers(0, flat.size, max(1, flat.size // 50))] = special
            feed[info.name] = array
    try:
        want = sess.run(None, feed)
    except Exception as err:
        want, oracle_error = None, str(err)[:300]
    try:
        got = _outputs(session.run(feed))
    except lepton_runtime.LeptonError as err:
        if want is None:
            return {"outcome": "both-refuse", "mutation": mutation, "message": str(err)[:300]}
        return {"outcome": "refused-valid", "mutation": mutation, "message": str(err)[:300]}
    except Exception as err:
        return _error(err) | {"mutation": mutation}
    if want is None:
        return {"outcome": "answered-invalid", "mutation": mutation, "oracle": oracle_error}
    if kind == "index":
        outcome = "agree" if _same(got, want) else "disagrees"
        return {"outcome": outcome, "mutation": mutation}
    verdicts = _float_verdicts(model, sess, feed, got, want, mutation)
    worst = max(verdicts.values(), key=FLOAT_VERDICTS.index)
    return {"outcome": worst, "mutation": mutation,
            "outputs": {k: v for k, v in verdicts.items() if v != "agree"}}


# Per-output verdicts on NaN/Inf/huge inputs, from best to worst. Each output is judged on
# its own (the random graphs are independent):
# - "agree": onnxruntime's answer, NaN exactly where it has NaN;
# - "agree-overflow" (huge inputs): where a sum overflows, whether it ends +inf, -inf or NaN
#   depends on the order of the additions (GEMM blocking), and a finite result within a
#   factor of two of FLT_MAX may overflow in another order; so there any non-finite answer
#   (or one that large) is as right as another, and the rest must agree (to OVERFLOW_RTOL);
# - "agree-reference": onnxruntime departs from ONNX's semantics (e.g. LayerNorm sums in
#   double past overflow) and Lepton gives onnx.reference's answer;
# - "nan-in-max-window": a NaN inside a MaxPool window. ONNX leaves this undefined and
#   onnxruntime's answer depends on where the NaN sits relative to its SIMD lanes (a 2x2
#   window [1, NaN, 3, 4] gives NaN, [1, 2, 3, NaN] gives 3); Lepton propagates the NaN, as
#   PyTorch does. Accepted only where every difference is a NaN in Lepton's answer and the
#   output depends on a MaxPool;
# - "disagrees": anything else.
FLOAT_VERDICTS = ("agree", "agree-overflow", "agree-reference", "nan-in-max-window",
                  "disagrees")
NEAR_OVERFLOW = 2.0 ** 127
# Sums of terms near 3e38 that cancel to ~1e36 carry the rounding of the large terms: the
# relative error of the small result grows by their ratio, so huge inputs get 1e-4, not 1e-5.
OVERFLOW_RTOL = 1e-4


def _float_verdicts(model: bytes, sess: Any, feed: dict, got: list, want: list,
                    mutation: str) -> dict[str, str]:
    from onnx.reference import ReferenceEvaluator

    names = [o.name for o in sess.get_outputs()]
    reference = None
    verdicts = {}
    for name, g, w in zip(names, got, want, strict=True):
        if _same([g], [w]):
            verdicts[name] = "agree"
        elif mutation == "huge" and _same([g], [w], overflow=True):
            verdicts[name] = "agree-overflow"
        else:
            if reference is None:
                reference = dict(zip(names, ReferenceEvaluator(model).run(None, feed),
                                     strict=True))
            if _same([g], [reference[name]]):
                verdicts[name] = "agree-reference"
            elif mutation == "nan" and "MaxPool" in _ops_behind(model, name) and \
                    _differs_only_by_nan(g, np.asarray(w)):
                verdicts[name] = "nan-in-max-window"
            else:
                verdicts[name] = "disagrees"
    return verdicts


def _ops_behind(model: bytes, output: str) -> set[str]:
    """The operator types ``output`` depends on."""
    import onnx

    graph = onnx.load_from_string(model).graph
    producer = {o: node for node in graph.node for o in node.output}
    ops, todo, seen = set(), [output], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in producer:
            continue
        seen.add(name)
        ops.add(producer[name].op_type)
        todo.extend(producer[name].input)
    return ops


def _differs_only_by_nan(got: np.ndarray, want: np.ndarray) -> bool:
    """Every element where ``got`` and ``want`` differ is a NaN in ``got``."""
    nan = np.isnan(got)
    return _same([np.where(nan, 0, got)], [np.where(nan, 0, want)])


def _same(got: list[np.ndarray], want: list, overflow: bool = False) -> bool:
    """Equal integers; floats within tolerance with NaN exactly where the oracle has NaN
    (``overflow``: non-finite or within a factor of two of FLT_MAX exactly where the oracle
    is, of any kind or size)."""
    for g, w in zip(got, want, strict=True):
        w = np.asarray(w)
        if np.issubdtype(w.dtype, np.integer):
            if not np.array_equal(g, w):
                return False
            continue
        if overflow:
            moderate = np.isfinite(w) & (np.abs(w) < NEAR_OVERFLOW)
            if not np.array_equal(np.isfinite(g) & (np.abs(g) < NEAR_OVERFLOW), moderate) \
                    or (moderate.any() and _compare(g[moderate], [w[moderate]],
                                                    rtol=OVERFLOW_RTOL)["outcome"]
                        != "compiled-correct"):
                return False
        elif _compare(g, [w])["outcome"] != "compiled-correct" or \
                not np.array_equal(np.isnan(g), np.isnan(w)):
            return False
    return True
