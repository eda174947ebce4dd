"""Load a verified artifact and run its plan through tvm_ffi with zero-copy DLPack tensors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import archive, compat
from . import format as fmt
from .errors import ArtifactError, InputError, KernelError, UnsupportedArtifactError
from .plan import Plan, TensorSpec, parse_plans
from .profile import KernelProfile, Profile, host_cycles, sim_cycles


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype of one model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}[{', '.join(map(str, self.shape))}]"


def aligned_empty(shape: Sequence[int], dtype: str | np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ALIGNMENT-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + fmt.ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % fmt.ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(tuple(shape))


def _compact_strides(array: np.ndarray) -> np.ndarray:
    """``array`` with the row-major strides kernels check their arguments against: numpy
    gives empty arrays arbitrary strides, which a kernel refuses (it reads nothing from
    them, so the view is safe)."""
    if array.size or array.ndim == 0:
        return array
    strides, step = [], array.itemsize
    for dim in reversed(array.shape):
        strides.append(step)
        step *= dim
    return np.lib.stride_tricks.as_strided(array, array.shape, tuple(reversed(strides)))


def _as_numpy(value: Any, name: str) -> np.ndarray:
    """Accept numpy arrays and anything exporting DLPack on the CPU (e.g. torch tensors)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__dlpack__"):
        if hasattr(value, "detach"):  # a tensor that may require grad
            value = value.detach()
        try:
            return np.from_dlpack(value)
        except (BufferError, RuntimeError, TypeError) as err:
            raise InputError(f"input {name!r}: cannot read it as a CPU array ({err})") from None
    if isinstance(value, (int, float, bool, list, tuple)):
        return np.asarray(value)
    raise InputError(
        f"input {name!r}: expected a numpy array or CPU tensor, got {type(value).__name__}"
    )


class Session:
    """A loaded artifact, ready to run. Create it with :func:`lepton_runtime.load`.

    Calls are serialised with a lock because the plan reuses one memory arena.
    """

    def __init__(self, path: Path, manifest: dict, plan: Plan | list[Plan],
                 weights: np.ndarray, module: Any, mode: str = "fast") -> None:
        import tvm_ffi

        plans = plan if isinstance(plan, list) else [plan]
        self.path = path
        self.mode = mode
        self.manifest = manifest
        self._lock = threading.Lock()
        self._module = module
        self._from_dlpack = lambda array: tvm_ffi.from_dlpack(_compact_strides(array))
        # one arena for every shape variant: calls are serialised, so they take turns in it
        self._arena = aligned_empty((max(p.arena_bytes for p in plans),), np.uint8)
        self._weights = weights
        self._variants = [self._prepare(p) for p in plans]
        self._use(0)
        self.inputs = tuple(self._info(name, tid) for name, tid in self._plan.inputs)
        self.outputs = tuple(self._info(name, tid) for name, tid in self._plan.outputs)
        #: The input shapes of every plan the artifact holds (one per compiled shape set).
        self.shapes = tuple(tuple(v["plan"].tensors[tid].shape for _, tid in v["plan"].inputs)
                            for v in self._variants)
        self._npu = self._npu_functions(module, mode)

    def _prepare(self, plan: Plan) -> dict:
        """The run state of one plan: its tensors as arrays, its calls bound to kernels."""
        self._plan = plan
        state: dict[str, Any] = {"plan": plan}
        self._staging = state["staging"] = [aligned_empty(plan.tensors[tid].shape,
                                                          plan.tensors[tid].dtype)
                                            for _, tid in plan.inputs]
        self._arrays = state["arrays"] = [None] * len(plan.tensors)
        self._ffi = state["ffi"] = [None] * len(plan.tensors)
        state["dynamic"] = [t for t in plan.tensors if self._is_dynamic(t)]
        for t in plan.tensors:
            if not self._is_dynamic(t):
                self._arrays[t.id] = self._static_array(t)
                self._ffi[t.id] = self._from_dlpack(self._arrays[t.id])
        state["calls"] = []
        for call in plan.calls:
            try:
                fn = self._module[call.kernel]
            except Exception:
                raise ArtifactError(
                    f"{self.path}: plan calls kernel {call.kernel!r}, which kernels.so does "
                    "not define") from None
            state["calls"].append((call, fn))
        return state

    def _use(self, index: int) -> None:
        """Make variant ``index`` the plan that runs (under the lock)."""
        state = self._variants[index]
        self._plan, self._staging = state["plan"], state["staging"]
        self._arrays, self._ffi = state["arrays"], state["ffi"]
        self._dynamic, self._calls = state["dynamic"], state["calls"]

    # -- calling convention -------------------------------------------------------------------

    def _info(self, name: str, tid: int) -> TensorInfo:
        t = self._plan.tensors[tid]
        return TensorInfo(name, t.shape, t.dtype)

    def _is_dynamic(self, t: TensorSpec) -> bool:
        if t.kind == "view":
            return self._plan.tensors[t.base].kind == "output"
        return t.kind == "output"

    def _static_array(self, t: TensorSpec) -> np.ndarray:
        if t.kind == "arena":
            return self._arena[t.offset : t.offset + t.nbytes].view(t.dtype).reshape(t.shape)
        if t.kind == "weight":
            return self._weights[t.offset : t.offset + t.nbytes].view(t.dtype).reshape(t.shape)
        if t.kind == "input":
            return self._staging[t.index]
        base = self._arrays[t.base]
        return base.reshape(t.shape)

    # -- calling convention -------------------------------------------------------------------

    def _bind(self, args: tuple, kwargs: Mapping[str, Any]) -> tuple[int, list[np.ndarray]]:
        """The variant whose input shapes the inputs have, and the inputs as arrays."""
        names = [i.name for i in self.inputs]
        if args and kwargs:
            raise InputError("pass inputs either all positionally or all by name, not both")
        if len(args) == 1 and isinstance(args[0], Mapping):
            kwargs, args = args[0], ()
        if kwargs:
            unknown = [k for k in kwargs if k not in names]
            if unknown:
                raise InputError(
                    f"unknown input name(s) {', '.join(map(repr, unknown))}; the model's inputs "
                    f"are {', '.join(map(repr, names))}"
                )
            missing = [n for n in names if n not in kwargs]
            if missing:
                raise InputError(f"missing input(s) {', '.join(map(repr, missing))}")
            args = tuple(kwargs[n] for n in names)
        if len(args) != len(names):
            raise InputError(
                f"the model takes {len(names)} input(s) ({', '.join(map(str, self.inputs))}), "
                f"got {len(args)}"
            )
        arrays = []
        for info, value in zip(self.inputs, args, strict=True):
            array = _as_numpy(value, info.name)
            if array.dtype != np.dtype(info.dtype):
                raise InputError(
                    f"input {info.name!r}: expected dtype {info.dtype}, got {array.dtype}; "
                    f"convert it with .astype('{info.dtype}')"
                )
            arrays.append(array)
        given = tuple(tuple(a.shape) for a in arrays)
        if given not in self.shapes:
            if len(self.shapes) == 1:
                bad = next(k for k, (g, w) in enumerate(zip(given, self.shapes[0],
                                                            strict=True)) if g != w)
                raise InputError(f"input {names[bad]!r}: expected shape "
                                 f"{list(self.shapes[0][bad])}, got {list(given[bad])}")

            def spelled(shapes: tuple) -> str:
                return ", ".join(f"{n}{list(d)}" for n, d in zip(names, shapes, strict=True))

            listed = "; ".join(spelled(shapes) for shapes in self.shapes)
            raise InputError(
                f"input shapes {spelled(given)} are not among the {len(self.shapes)} shape "
                f"sets this artifact was compiled for: {listed}; compile it with these shapes "
                "too")
        variant = self.shapes.index(given)
        state = self._variants[variant]
        for position, ref in state["plan"].pins:
            self._check_pin(self.inputs[position], arrays[position], state["arrays"][ref])
        return variant, arrays

    @staticmethod
    def _check_pin(info: TensorInfo, array: np.ndarray, pinned: np.ndarray) -> None:
        """A pinned input must hold, bit for bit, the value it was compiled for."""
        given = np.ascontiguousarray(array)
        if given.tobytes() == pinned.tobytes():
            return
        shown = np.array2string(pinned, threshold=16, separator=", ")
        raise InputError(
            f"input {info.name!r} decides a shape or an attribute of the model and was fixed "
            f"to {shown} when it was compiled; this artifact computes only that value (got "
            f"{np.array2string(given, threshold=16, separator=', ')}); compile again with "
            "example inputs holding the new value")

    def run(self, *args: Any, **kwargs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Run the model.

        Parameters
        ----------
        *args, **kwargs
            The inputs, positionally in signature order, by name, or as one mapping. numpy
            arrays or CPU tensors exporting DLPack (e.g. torch tensors), with exactly the
            dtype and shape of :attr:`inputs`.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            One array for a single-output model, else a tuple in :attr:`outputs` order. The
            arrays are owned by the caller.
        """
        variant, arrays = self._bind(args, kwargs)
        with self._lock:
            self._use(variant)
            return self._execute(arrays)

    def _execute(self, arrays: list[np.ndarray], on_call: Any = None) -> Any:
        for staging, array in zip(self._staging, arrays, strict=True):
            np.copyto(staging, array, casting="no")
        fresh = {}
        for t in self._dynamic:
            if t.kind == "output":
                fresh[t.index] = array = aligned_empty(t.shape, t.dtype)
            else:
                array = self._arrays[t.base].reshape(t.shape)
            self._arrays[t.id] = array
            self._ffi[t.id] = self._from_dlpack(array)
        ffi = self._ffi
        resident = self._npu.get("resident") if self.mode == "sim" else None
        for index, (call, fn) in enumerate(self._calls):
            args = [ffi[i] for i in call.args]
            marked = resident is not None and bool(call.resident)
            try:
                for t in call.resident if marked else ():
                    array = self._arrays[t]
                    resident(array.ctypes.data, array.nbytes)
                if on_call is None:
                    fn(*args)
                else:
                    on_call(index, call, lambda fn=fn, args=args: fn(*args))
            except Exception as err:
                raise KernelError(f"kernel {call.kernel!r} failed: {err}") from None
            finally:
                if marked:
                    resident(0, -1)
            if call.guard is not None:
                status = self._arrays[call.guard.status]
                if status[0]:
                    raise InputError(call.guard.message(status))
        results = []
        for slot, (_, tid) in enumerate(self._plan.outputs):
            t = self._plan.tensors[tid]
            if t.kind == "output" and t.index == slot:
                results.append(fresh[slot])
            else:
                results.append(np.array(self._arrays[tid], copy=True))
        return results[0] if len(results) == 1 else tuple(results)

    def _npu_functions(self, module: Any, mode: str) -> dict[str, Any]:
        """The NPU control functions of kernels.so (empty for host-only artifacts)."""
        try:
            funcs = {"set_mode": module["lepton_npu_set_mode"],
                     "counter": module["lepton_npu_counter"]}
        except Exception:
            funcs = {}
        try:  # artifacts built before cascading have no residency marks
            funcs["resident"] = module["lepton_npu_resident"]
        except Exception:
            pass
        if mode == "sim" and not funcs:
            raise UnsupportedArtifactError(
                f"{self.path}: sim mode needs NPU kernels, and this artifact has none (it was "
                "built for the host, or from a float model); load it with mode='fast'"
            )
        if funcs:
            funcs["set_mode"](fmt.NPU_MODES[mode])
        return funcs

    def profile(self, *args: Any, **kwargs: Any) -> Profile:
        """Run once and profile every kernel call.

        Each row names the kernel, the source layer and ops it computes (from the compiler's
        placement report in the manifest), whether it runs on the NPU, its MACs and its wall
        time. In sim mode NPU kernels also report simulated cycles, MACs issued and useful,
        and DRAM bytes from the spec's accounting, and host kernels the spec's stated host
        cost in cycles (``[host_fallback]``); the profile's totals are the sums over the
        kernels. Inputs are passed as to :meth:`run`.
        """
        variant, arrays = self._bind(args, kwargs)
        target = self.manifest.get("target", {})
        names = list(target.get("sim_counters") or [])
        peak = int(target.get("peak_macs_per_cycle") or 0)
        host_cost = target.get("host_fallback") if isinstance(
            target.get("host_fallback"), dict) else None
        layers = {op.get("layer"): op for op in
                  (self.manifest.get("report") or {}).get("ops", []) if isinstance(op, dict)}
        rows: list[KernelProfile] = []

        def measure(index: int, call: Any, invoke: Any) -> None:
            counter = self._npu.get("counter")
            if counter is not None:
                counter(-1)
            start = time.perf_counter()
            invoke()
            elapsed = (time.perf_counter() - start) * 1e3
            static = dict(call.sim)
            layer = layers.get(call.ops[0]) if len(call.ops) == 1 else None
            row = KernelProfile(index, call.kernel, call.ops, elapsed)
            if layer is not None:
                row.layer = call.ops[0]
                op = str(layer.get("op") or "").removeprefix("relax.")
                row.ops = tuple(o for o in [op, *(layer.get("fused") or [])] if o)
                row.macs = int(layer.get("macs") or 0)
            nbytes = sum(self._plan.tensors[t].nbytes for t in call.args)
            if static:
                row.unit = "npu"
                row.macs_useful = static.get("useful_macs", 0)
                row.macs = row.macs or row.macs_useful
                row.min_dram_bytes = static.get("min_dram_bytes", nbytes)
            elif self.mode == "sim" and host_cost:
                row.cycles = host_cycles(row.macs, nbytes, host_cost)
            if counter is not None and self.mode == "sim" and static:
                counts = {name: int(counter(i)) for i, name in enumerate(names)}
                row.counters = {**counts, "_peak_macs_per_cycle": peak}
                row.cycles = sim_cycles(counts, static)
                row.macs_issued = counts.get("macs_issued", 0)
                row.dram_bytes = counts.get("dram_bytes", 0)
                row.sram_bytes = {k[len("sram_"):-len("_bytes")]: v for k, v in static.items()
                                  if k.startswith("sram_")}
            rows.append(row)

        with self._lock:
            self._use(variant)
            self._execute(arrays, measure)
        return Profile(self.mode, rows, peak, int(target.get("dma_bytes_per_cycle") or 0),
                       int(target.get("clock_hz") or 0))

    __call__ = run


def _load_kernels(path: Path, data: bytes) -> Any:
    import tvm_ffi

    tmpdir = tempfile.mkdtemp(prefix="lepton-kernels-")
    try:
        so_path = os.path.join(tmpdir, fmt.KERNELS)
        fd = os.open(so_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o500)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            module = tvm_ffi.load_module(so_path)
        except Exception as err:
            raise ArtifactError(f"{path}: cannot load {fmt.KERNELS}: {err}") from None
        try:
            install = module["lepton_install_backend"]
        except Exception:
            raise ArtifactError(
                f"{path}: {fmt.KERNELS} lacks the Lepton parallel runtime; re-export the model"
            ) from None
        install()
        return module
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def load(path: str | os.PathLike, mode: str = "fast") -> Session:
    """Load, verify and prepare an artifact for running.

    Every member's sha256 is checked against the manifest, the format version, kernel ABI,
    platform and CPU features are checked, and the plan is validated — all before
    ``kernels.so`` is loaded. Nothing is unpickled.

    Parameters
    ----------
    path
        A ``.lepton`` file written by ``CompiledModel.export`` or ``lepton compile``.
    mode
        ``"fast"`` (default): NPU instructions as optimised host code. ``"sim"``: the same
        results plus cycle, MAC and DRAM accounting from the spec, read with
        :meth:`Session.profile` (NPU artifacts only).

    Returns
    -------
    Session
        Call :meth:`Session.run` (or the session itself) with the model's inputs.

    Raises
    ------
    ArtifactError
        The file is missing, malformed, modified, unsafe or unsupported here (see subclasses).
    """
    if mode not in fmt.NPU_MODES:
        raise UnsupportedArtifactError(f"unknown mode {mode!r}; use 'fast' or 'sim'")
    path = Path(path)
    members = archive.list_members(path)
    manifest = archive.read_manifest(path, members)
    compat.check_manifest(path, manifest)
    archive.verify_members(path, members, manifest)
    try:
        raw_plan = json.loads(archive.read_member(path, members[fmt.PLAN]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: {fmt.PLAN} is not valid JSON ({err})") from None
    weights_member = members[fmt.WEIGHTS]
    plan = parse_plans(path, raw_plan, weights_member.size)
    if weights_member.size:
        weights = np.memmap(path, dtype=np.uint8, mode="c", offset=weights_member.offset,
                            shape=(weights_member.size,))
        if weights.ctypes.data % fmt.ALIGNMENT:  # pragma: no cover - tar data is 512-aligned
            aligned = aligned_empty(weights.shape, np.uint8)
            aligned[...] = weights
            weights = aligned
    else:
        weights = aligned_empty((0,), np.uint8)
    # The .so is written from bytes that were hashed; re-verify what we hand to the loader.
    kernels = archive.read_member(path, members[fmt.KERNELS])
    if hashlib.sha256(kernels).hexdigest() != manifest["members"][fmt.KERNELS]["sha256"]:
        raise ArtifactError(f"{path}: {fmt.KERNELS} changed while loading")
    module = _load_kernels(path, kernels)
    return Session(path, manifest, plan, weights, module, mode)


def inspect(path: str | os.PathLike) -> dict:
    """Verify an artifact (manifest, hashes, plan) without loading its kernels; describe it.

    Returns
    -------
    dict
        ``manifest`` (the parsed manifest), ``members`` (name → size in bytes), ``calls``
        (kernel name per plan call, in order), ``arena_bytes`` and ``guards`` (what the
        run-time value checks check: one line per guard, e.g. ``input 'ids': index of
        Gather 'lookup' in -1000..999``).
    """
    path = Path(path)
    members = archive.list_members(path)
    manifest = archive.read_manifest(path, members)
    archive.verify_members(path, members, manifest)
    try:
        raw_plan = json.loads(archive.read_member(path, members[fmt.PLAN]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: {fmt.PLAN} is not valid JSON ({err})") from None
    plans = parse_plans(path, raw_plan, members[fmt.WEIGHTS].size)
    plan = plans[0]
    return {
        "manifest": manifest,
        "members": {name: m.size for name, m in members.items()},
        "calls": [c.kernel for c in plan.calls],
        "arena_bytes": plan.arena_bytes,
        "guards": [c.guard.describe() for c in plan.calls if c.guard is not None],
        "pins": _describe_pins(path, members, plan),
        "shapes": [{name: list(p.tensors[tid].shape) for name, tid in p.inputs}
                   for p in plans],
    }


def _describe_pins(path: Path, members: dict, plan: Plan) -> list[str]:
    """``input 'name' = value`` for each pinned input (values read from weights.bin)."""
    if not plan.pins:
        return []
    member = members[fmt.WEIGHTS]
    weights = np.memmap(path, dtype=np.uint8, mode="r", offset=member.offset,
                        shape=(member.size,))
    lines = []
    for position, ref in plan.pins:
        t = plan.tensors[ref]
        value = np.frombuffer(weights[t.offset: t.offset + t.nbytes].tobytes(),
                              dtype=t.dtype).reshape(t.shape)
        name = plan.inputs[position][0]
        lines.append(f"input {name!r} = "
                     f"{np.array2string(value, threshold=16, separator=', ')}")
    return lines
