"""The benchmark runner: every model with every system, in one run, on one thread count.

    python -m benchmarks.run [--quick] [--models a,b] [--systems a,b] [--threads 2]
    lepton bench ...

Per model and system: median and minimum latency over ``--repeats`` runs after warm-up,
compile time, peak resident memory, artifact size, and fidelity against PyTorch fp32 (max
absolute error, cosine, top-1 agreement); every latency also as a ratio to onnxruntime fp32
(and int8, for int8 systems) measured in the same run. For the Lepton int8 build, one sim-mode
run gives NPU cycles, MAC utilisation and DRAM bytes against the roofline. Writes
``<out>/<date>[_quick].json``, ``.md`` and PNG charts, with the CPU model, flags and library
versions.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import logging
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lepton_compiler.errors import OptionError
from lepton_compiler.examples.bench.systems import INT8, SYSTEMS, Case, Context, Unavailable
from lepton_compiler.progress import progress
from lepton_compiler.timing import measure

logger = logging.getLogger(__name__)


def _normal(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _case(name: str, make: Callable[[], Any], shape: tuple[int, ...], description: str,
          calibration: int) -> Case:
    return Case(name, make(), (_normal(shape, 0),),
                [(_normal(shape, 1000 + i),) for i in range(calibration)], description)


def make_cases(names: Sequence[str], calibration: int = 8) -> list[Case]:
    """The benchmark models (random weights, fixed seeds) by name; see ``MODELS``."""
    from lepton_compiler.examples import zoo

    table = {
        "resnet18": (zoo.resnet18, (1, 3, 224, 224), "ResNet-18, batch 1, 224x224"),
        "mobilenet_v2": (zoo.mobilenet_v2, (1, 3, 224, 224), "MobileNetV2, batch 1, 224x224"),
        "efficientnet_lite": (zoo.efficientnet_lite, (1, 3, 224, 224),
                              "EfficientNet-Lite0-style (3x3 and 5x5 depthwise), batch 1, "
                              "224x224"),
        "bert_encoder": (lambda: zoo.bert_encoder(layers=4, hidden=256, heads=4, ff=1024),
                         (1, 128, 256), "BERT-style encoder: 4 layers, hidden 256, 4 heads, "
                         "sequence 128"),
        "mlp": (lambda: zoo.mlp(1024, 1024, 1024, depth=3), (64, 1024),
                "MLP: 3 x Linear(1024), batch 64"),
        "mlp_small": (lambda: zoo.mlp(256, 256, 10, depth=3), (16, 256),
                      "MLP: 3 linear layers, hidden 256, batch 16"),
        "tiny_cnn": (zoo.small_cnn, (2, 3, 16, 16),
                     "tiny CNN: conv, BN, pooling, residual, linear; batch 2, 16x16"),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise OptionError(f"unknown benchmark model(s) {', '.join(unknown)}; "
                          f"available: {', '.join(table)}")
    return [_case(n, *table[n], calibration) for n in names]


MODELS = ("resnet18", "mobilenet_v2", "efficientnet_lite", "bert_encoder", "mlp")
QUICK_MODELS = ("mlp_small", "tiny_cnn")


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model and flags, core count, thread count and library versions."""
    import onnxruntime
    import torch

    from lepton_compiler import tvm_compat
    from lepton_compiler.version import __version__

    cpu, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu in ("", platform.machine()):
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    except OSError:
        pass
    return {
        "cpu": cpu, "cpu_flags": flags, "logical_cpus": os.cpu_count(), "threads": threads,
        "platform": platform.platform(), "python": platform.python_version(),
        "versions": {"lepton_compiler": __version__, "tvm": tvm_compat.tvm_version(),
                     "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "numpy": np.__version__},
    }


class PeakMemory:
    """Peak resident-memory growth of this process inside a ``with`` block (Linux: resets the
    high-water mark through ``/proc/self/clear_refs``); ``None`` where that is unavailable."""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back first
        except (OSError, AttributeError):
            pass
        self.mb: float | None = None
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._base = self._read("VmRSS")
        except OSError:
            self._base = None
        return self

    @staticmethod
    def _read(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise OSError(key)

    def __exit__(self, *exc: object) -> None:
        if self._base is not None:
            self.mb = max(self._read("VmHWM") - self._base, 0) / 1024


def fidelity(output: Any, reference: np.ndarray) -> dict[str, float]:
    """Max absolute error, cosine and top-1 agreement (argmax of the last axis) vs fp32."""
    out = np.asarray(output[0] if isinstance(output, tuple) else output, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if out.shape != ref.shape:
        return {"max_abs_error": float("nan"), "cosine": float("nan"),
                "top1_agreement": float("nan")}
    denom = np.linalg.norm(out) * np.linalg.norm(ref)
    top = ref.reshape(-1, ref.shape[-1]).argmax(-1) == out.reshape(-1, ref.shape[-1]).argmax(-1)
    return {"max_abs_error": float(np.abs(out - ref).max()),
            "cosine": float(out.ravel() @ ref.ravel() / denom) if denom else float("nan"),
            "top1_agreement": float(top.mean())}


def bench_system(name: str, case: Case, ctx: Context, repeats: int, warmup: int,
                 reference: np.ndarray | None) -> dict[str, Any]:
    """Prepare and time one system on one model; ``available: False`` with the reason when
    it cannot run."""
    row: dict[str, Any] = {"system": name, "model": case.name}
    try:
        with PeakMemory() as mem:
            prepared = SYSTEMS[name](case, ctx)
            timing = measure(prepared.run, repeats, warmup)
            output = prepared.run()
        quality = fidelity(output, reference) if reference is not None else {}
    except Unavailable as why:
        return {**row, "available": False, "reason": str(why)}
    except Exception as err:  # a competitor's failure is a result, not a crash of the run
        logger.warning("%s on %s failed", name, case.name, exc_info=True)
        first = str(err).splitlines()[0] if str(err) else ""
        return {**row, "available": False, "reason": f"{type(err).__name__}: {first}"}
    row.update(available=True, median_ms=timing.median_ms, min_ms=timing.min_ms,
               repeats=repeats, compile_s=prepared.compile_s, peak_rss_mb=mem.mb,
               artifact_bytes=prepared.artifact_bytes, artifact=prepared.artifact,
               **prepared.extra)
    return {**row, **quality}


def _ratios(rows: list[dict[str, Any]]) -> None:
    """Speed as a ratio to onnxruntime measured in the same run (> 1: faster than it)."""
    by = {(r["model"], r["system"]): r for r in rows if r.get("available")}
    for r in rows:
        if not r.get("available"):
            continue
        for base, key in (("onnxruntime_fp32", "vs_onnxruntime_fp32"),
                          ("onnxruntime_int8", "vs_onnxruntime_int8")):
            ort = by.get((r["model"], base))
            if ort is not None and (base != "onnxruntime_int8" or r["system"] in INT8):
                r[key] = ort["median_ms"] / r["median_ms"]
                r[key.replace("vs_", "min_vs_")] = ort["min_ms"] / r["min_ms"]


def run(models: Sequence[str], systems: Sequence[str], threads: int, repeats: int,
        warmup: int, quick: bool, calibration: int = 8) -> dict[str, Any]:
    """Measure every model with every system; the results dict written to JSON."""
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise OptionError(f"unknown system(s) {', '.join(unknown)}; "
                          f"available: {', '.join(SYSTEMS)}")
    os.environ.setdefault("LEPTON_NUM_THREADS", str(threads))
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    cases = make_cases(models, calibration)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as tmp, \
            progress(len(cases) * len(systems), "benchmarking") as bar:
        ctx = Context(threads, Path(tmp), quick)
        for case in cases:
            import torch

            with torch.no_grad():
                reference = case.model(*[torch.from_numpy(x) for x in case.inputs]).numpy()
            for name in systems:
                bar.update(0, note=f"{case.name} / {name}")
                rows.append(bench_system(name, case, ctx, repeats, warmup, reference))
                bar.update(1)
    _ratios(rows)
    return {
        "benchmark": "lepton_bench", "quick": quick,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(threads), "repeats": repeats, "warmup": warmup,
        "models": {c.name: c.description for c in cases}, "systems": list(systems),
        "rows": rows,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's command-line options (shared by ``lepton bench`` and the module)."""
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {', '.join(QUICK_MODELS)}, few repeats")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated (default: {','.join(MODELS)})")
    parser.add_argument("--systems", default=None,
                        help=f"comma-separated (default: all: {','.join(SYSTEMS)})")
    parser.add_argument("--threads", type=int, default=2, help="threads for every system")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per system (default 20; 5 with --quick)")
    parser.add_argument("--out", default="benchmarks/results", help="results folder")


def main_args(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by parsed options and write the JSON, markdown and
    charts; returns the results."""
    from lepton_compiler.examples.bench.report import write_outputs

    models = args.models.split(",") if args.models else list(
        QUICK_MODELS if args.quick else MODELS)
    systems = args.systems.split(",") if args.systems else list(SYSTEMS)
    repeats = args.repeats or (5 if args.quick else 20)
    if repeats < 1 or args.threads < 1:
        raise OptionError("--repeats and --threads must be at least 1")
    results = run(models, systems, args.threads, repeats, 1 if args.quick else 3, args.quick,
                  calibration=4 if args.quick else 8)
    paths = write_outputs(results, Path(args.out))
    for path in paths:
        print(f"wrote {path}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    main_args(parser.parse_args(argv))
    return 0
