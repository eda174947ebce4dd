"""Measuring one schedule candidate of an NPU GEMM kernel, isolated in a worker process.

The worker schedules the kernel with the candidate's plan, compiles it, and runs it on
seeded random operands: in sim mode it returns the simulated cycles (deterministic), in
fast mode the median wall time of ``repeats`` calls. A candidate that hangs is killed after
``timeout`` seconds and one that crashes the worker is recorded as failed; either way the
worker is restarted and the session goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

WORKLOAD_PREFIX = "gemm"

#: The cascade choices a GEMM kernel is measured under: which of its activations stay in the
#: input SRAM (``lower/cascade.py``): ``input`` its first operand (the activation it reads),
#: ``output`` its result. A record's knobs name them as ``"resident": [...]`` (absent: none).
RESIDENCY: tuple[tuple[str, ...], ...] = ((), ("input",), ("output",), ("input", "output"))
#: Which of a GEMM kernel's parameters each residency role names.
ROLE_PARAM = {"input": 0, "output": -1}


def resident_bytes(func: Any, resident: Any) -> int:
    """Input SRAM bytes that ``resident`` (roles of :data:`RESIDENCY`) of ``func`` hold."""
    from lepton_compiler.target.npu_schedule import buffer_bytes

    unknown = set(resident) - set(ROLE_PARAM)
    if unknown:
        raise ValueError(f"unknown residency {sorted(unknown)}; use 'input' or 'output'")
    return sum(buffer_bytes(func.params[ROLE_PARAM[r]]) for r in resident)


def workload_key(func: Any, spec: Any) -> str:
    """The database key of a quantized GEMM kernel (scheduled or not): extents, batch,
    structure, spec."""
    from lepton_compiler.target.npu_schedule import gemm_batch, gemm_extents, gemm_form

    m, n, k = gemm_extents(func)
    return f"{WORKLOAD_PREFIX}/{m}x{n}x{k}/b{gemm_batch(func)}/{gemm_form(func)}/" \
           f"{spec.fingerprint()}"


#: Requantize terms of a measurement: multiplier 2^30, shift 31 (a scale of 1/2), output
#: zero point 0 in [-128, 127]; the arithmetic stays in range, and the GEMM's requantize
#: instruction costs the same whatever its terms.
_REQUANT_TERMS = {"MUL": 1 << 30, "SH": 31}


def random_args(func: Any, seed: int = 0) -> list[np.ndarray]:
    """Operands for every buffer of ``func``: int8 data random, the requantize terms
    :data:`_REQUANT_TERMS` (``QP`` = zero point 0, clamp [-128, 127]), everything else
    zero."""
    from lepton_runtime import aligned_empty

    rng = np.random.default_rng(seed)
    arrays = []
    for param in func.params:  # a buffer-typed Var in TVM 0.27
        shape = [int(d) for d in param.shape]
        dtype = str(param.dtype)
        array = aligned_empty(shape, dtype)
        name = str(param.name)
        if dtype == "int8":
            array[...] = rng.integers(-128, 128, shape, dtype=np.int8)
        elif name == "QP" and shape == [3]:
            array[...] = (0, -128, 127)
        else:
            array[...] = _REQUANT_TERMS.get(name, 0)
        arrays.append(array)
    return arrays


def build_candidate(func: Any, spec: Any, knobs: dict[str, Any], cpu: str | None = None
                    ) -> tuple[bytes, Any]:
    """Schedule and compile ``func`` with the plan ``knobs``; (kernels.so bytes, plan)."""
    from lepton_compiler.lower import lowering
    from lepton_compiler.target.lepton_target import resolve_lepton
    from lepton_compiler.target.npu_schedule import (
        gemm_extents,
        plan_from_knobs,
        schedule_gemm_kernel,
    )

    npu = resolve_lepton(spec, cpu)
    plan = plan_from_knobs(*gemm_extents(func), npu.spec, knobs,
                           resident_bytes(func, knobs.get("resident", ())))
    scheduled = schedule_gemm_kernel(func, npu.spec, plan)
    return lowering.codegen({"kernel": scheduled}, {}, npu.host.tvm_target(), npu), plan


def run_candidate(so_bytes: bytes, func: Any, spec: Any, plan: Any, mode: str,
                  repeats: int = 5, resident: Any = ()) -> float:
    """Cycles (sim) or median seconds (host) of one call of a compiled candidate; in sim
    mode the operands named by ``resident`` (:data:`RESIDENCY`) are held in SRAM, as a
    cascade holds them."""
    import tvm_ffi

    from lepton_compiler.target.npu_kernels import MODES, load_kernel_library, read_counters
    from lepton_compiler.target.npu_schedule import sim_static
    from lepton_runtime.profile import sim_cycles

    module = load_kernel_library(so_bytes)
    fn = module["kernel"]
    arrays = random_args(func)
    args = [tvm_ffi.from_dlpack(a) for a in arrays]
    if mode == "sim":
        module["lepton_npu_set_mode"](MODES["sim"])
        for role in resident:
            held = arrays[ROLE_PARAM[role]]
            module["lepton_npu_resident"](held.ctypes.data, held.nbytes)
        read_counters(module, reset=True)
        try:
            fn(*args)
        finally:
            module["lepton_npu_resident"](0, -1)
        return float(sim_cycles(read_counters(module, reset=True), sim_static(plan, spec)))
    module["lepton_npu_set_mode"](MODES["fast"])
    fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_library(path: str, args: list, repeats: int = 5) -> list[float]:
    """Seconds per call of a compiled host kernel's ``main`` (``repeats`` timings, each the
    mean of enough calls to last about 10 ms) on seeded random operands."""
    import tvm

    rng = np.random.default_rng(0)
    module = tvm.runtime.load_module(path)
    dev = tvm.cpu()
    tensors = []
    for shape, dtype in args:
        if dtype.startswith("float"):
            data = rng.standard_normal(shape).astype(dtype)
        else:
            data = np.zeros(shape, dtype)  # zero shifts/multipliers keep integer code in range
        tensors.append(tvm.runtime.tensor(data, dev))
    timer = module.time_evaluator(module.entry_name, dev, number=1, repeat=repeats,
                                  min_repeat_ms=10)
    return [float(t) for t in timer(*tensors).results]


def worker_main() -> None:
    """The measuring process: one JSON job per stdin line, one JSON result per stdout line."""
    import json
    import sys

    import tvm

    from lepton_compiler.target.spec import load_spec

    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not corrupt the protocol
    for line in sys.stdin:
        job = json.loads(line)
        try:
            if job.get("kind") == "library":
                result = {"status": "ok", "seconds": time_library(job["path"], job["args"],
                                                                  job.get("repeats", 5))}
            else:
                func = tvm.ir.load_json(job["func"])
                spec = load_spec(job["spec"])
                so_bytes, plan = build_candidate(func, spec, job["knobs"], job.get("cpu"))
                result = {"status": "ok", "cost": run_candidate(
                    so_bytes, func, spec, plan, job["mode"], job.get("repeats", 5),
                    job["knobs"].get("resident", ()))}
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            result = {"status": "failed", "error": f"{type(err).__name__}: {first}"}
        out.write(json.dumps(result) + "\n")
        out.flush()


@dataclass
class LocalRunner:
    """Measures in a worker process on this machine: ``mode="sim"`` (cycles) or ``"host"``
    (wall seconds). ``timeout``: seconds before a candidate counts as hung."""

    mode: str = "sim"
    timeout: float = 120.0
    repeats: int = 5

    def __post_init__(self) -> None:
        self._proc: Any = None

    @property
    def unit(self) -> str:
        return "cycles" if self.mode == "sim" else "seconds"

    @property
    def name(self) -> str:
        """What records name as their runner: ``sim`` or ``host``."""
        return self.mode

    def _start(self) -> None:
        import subprocess
        import sys

        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from lepton_compiler.tuning.measure import worker_main; "
                                   "worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            self._proc = None

    def measure(self, func_json: str, spec: Any, knobs: dict[str, Any]) -> dict[str, Any]:
        """One candidate's result: ``{"status": "ok", "cost": ...}`` or failed + error."""
        job = {"func": func_json, "spec": spec.to_dict(), "knobs": knobs,
               "mode": "sim" if self.mode == "sim" else "fast", "repeats": self.repeats}
        return self._request(job)

    def measure_library(self, path: str, args: list) -> dict[str, Any]:
        """Time a compiled host kernel (``main``) on operands of ``args`` (shape, dtype):
        ``{"status": "ok", "seconds": [...]}`` or failed + error."""
        return self._request({"kind": "library", "path": path, "args": args,
                              "repeats": self.repeats})

    def _request(self, job: dict[str, Any]) -> dict[str, Any]:
        import json
        import select

        if self._proc is None or self._proc.poll() is not None:
            self._start()
        try:
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()
            ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout)
            line = self._proc.stdout.readline() if ready else None
        except (BrokenPipeError, OSError):
            line = ""
        if line is None:
            self.close()
            return {"status": "failed", "error": f"timed out after {self.timeout:g}s"}
        if not line:
            code = self._proc.poll()
            self.close()
            return {"status": "failed", "error": f"the measuring process died (exit {code})"}
        return json.loads(line)
