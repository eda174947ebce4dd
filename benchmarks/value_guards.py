"""What the run-time value checks cost: each model built with and without its guard kernels,
timed alternately in one process (host fp32, Lepton's default build).

    python -m benchmarks.value_guards [--threads 2] [--repeats 30] [--models ...]

Models: the main suite's ResNet-18, BERT-style encoder and MLP (none of which trusts an
input value, so their builds must come out identical), and the BERT-style encoder behind a
token embedding (``ids [1, 128]``: one guard over the ids). The unguarded build swaps
``lepton.GuardValues`` for the identity, for this measurement only. Reports the median of
each, the overhead in percent and the guard kernels' share of the calls.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks import write_result


def _embedded_encoder():
    import torch

    from lepton_compiler.examples import zoo

    class Embedded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.tokens = torch.nn.Embedding(8000, 256)
            self.positions = torch.nn.Parameter(torch.randn(1, 128, 256) * 0.02)
            self.encoder = zoo.bert_encoder(layers=4, hidden=256, heads=4, ff=1024)

        def forward(self, ids):
            return self.encoder(self.tokens(ids) + self.positions)

    return Embedded().eval()


def _cases(names: list[str]) -> list[tuple[str, object, tuple]]:
    from lepton_compiler.examples.bench.runner import make_cases

    cases = [(c.name, c.model, c.inputs) for c in make_cases(
        [n for n in names if n != "embedded_encoder"])]
    if "embedded_encoder" in names:
        ids = np.random.default_rng(0).integers(0, 8000, (1, 128)).astype(np.int64)
        cases.append(("embedded_encoder", _embedded_encoder(), (ids,)))
    return cases


def _build(model, inputs, guarded: bool):
    import tvm

    import lepton_compiler as lc
    from lepton_compiler import pipeline

    original = pipeline.GuardValues
    if not guarded:
        pipeline.GuardValues = lambda *args, **kwargs: tvm.transform.module_pass(
            lambda mod, ctx: mod, opt_level=0, name="identity")
    try:
        return lc.build(model, inputs)
    finally:
        pipeline.GuardValues = original


def bench(names: list[str], repeats: int) -> list[dict]:
    rows = []
    for name, model, inputs in _cases(names):
        guarded, plain = _build(model, inputs, True), _build(model, inputs, False)
        np.testing.assert_allclose(guarded(*inputs), plain(*inputs), rtol=1e-5, atol=1e-5)
        calls = len(guarded.manifest.get("kernels", []))
        guards = sum(1 for k in guarded.manifest.get("kernels", []) if "guard" in k)
        times: dict[str, list[float]] = {"guarded": [], "unguarded": []}
        for fn in (guarded, plain):
            for _ in range(3):
                fn(*inputs)  # warm up
        for _ in range(repeats):  # alternate, so drift hits both alike
            for key, fn in (("guarded", guarded), ("unguarded", plain)):
                start = time.perf_counter()
                fn(*inputs)
                times[key].append((time.perf_counter() - start) * 1e3)
        g, p = (float(np.median(times[k])) for k in ("guarded", "unguarded"))
        rows.append({"model": name, "guarded_ms": g, "unguarded_ms": p,
                     "overhead_pct": 100 * (g - p) / p, "guard_kernels": guards,
                     "kernels": calls})
        print(f"{name:18s} guarded {g:8.3f} ms  unguarded {p:8.3f} ms  overhead "
              f"{rows[-1]['overhead_pct']:+6.2f}%  guard kernels {guards}/{calls}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    from lepton_compiler.examples.bench.runner import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--models", default="resnet18,bert_encoder,mlp,embedded_encoder")
    args = parser.parse_args(argv)
    os.environ["LEPTON_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("LEPTON_PROGRESS", "0")
    result = {"machine": machine_info(args.threads),
              "rows": bench(args.models.split(","), args.repeats)}
    write_result("value_guards", result)
    return result


if __name__ == "__main__":
    main()
