"""Per-channel int8 post-training quantization: configuration, calibration tables, the
build stages, the integer reference and the per-layer accuracy analysis.

Typical use::

    config = QuantConfig(calibration_data=[(x,) for x in batches], method="entropy")
    compiled = lepton_compiler.build(model, example_inputs, target="lepton", quantize=config)
    compiled.quantization.table.save("calib.json")      # reproducible builds:
    QuantConfig(table="calib.json")                      # no re-calibration

Calibration runs the float model (compiled for the host, every intermediate tensor an
output) over the calibration set; ranges per tensor come from the chosen method
(``passes/calibrate.py``); the integer rewrite and its numpy reference are in
``passes/quantize.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lepton_compiler.errors import CalibrationError, OptionError, QuantizationError
from lepton_compiler.passes.calibrate import METHODS, Stats, choose_method, choose_range
from lepton_compiler.passes.qgraph import COMPUTE_KINDS, LayerGraph, check_partition, read_graph
from lepton_compiler.passes.quantize import (
    CHANNEL_OUTPUT_KINDS,
    QuantizedGraph,
    plan_quantization,
    run_reference,
)
from lepton_compiler.progress import progress

TABLE_VERSION = 1


@dataclass
class QuantConfig:
    """How to quantize a model to int8.

    Parameters
    ----------
    calibration_data
        An iterable of samples, each a tuple/list of arrays (one per model input, in order),
        a dict ``{input name: array}``, or one array for a one-input model; numpy arrays or
        torch tensors, each shaped exactly like the model's input. Not needed with ``table``.
    method
        ``"minmax"`` (default), ``"percentile"``, ``"entropy"`` (KL), ``"mse"``, or
        ``"auto"``: per tensor, whichever of those four quantizes the tensor's calibration
        histogram with the highest SQNR (the table records the choice as ``"method"``).
    percentile
        For ``method="percentile"``: the kept share of the distribution, in (50, 100].
    per_channel
        Weights with one scale per output channel (default) or one per tensor.
    skip
        Layer names (as in the reports: ``conv2d_0``, ``dense_1``, ``add_0``...) to keep float.
    overrides
        ``{layer: {"float": True}}`` keeps a layer in float; ``{layer or input:
        {"range": (lo, hi)}}`` forces the calibrated range of its output tensor.
    table
        A :class:`CalibrationTable` (or the path of one saved as JSON): its ranges are used
        and no calibration is run.
    progress
        Show a progress bar while calibrating (default: when stderr is a terminal).
    equalize
        Cross-layer equalization before calibration: consecutive convolutions (through no
        activation or a ReLU) get balanced per-channel weight ranges, the model's function
        unchanged (:mod:`lepton_compiler.passes.equalize`; ReLU6 pairs are left alone).
    bias_correction
        Empirical bias correction: run the float and the int8 model on the calibration data
        and move each conv/dense bias by the mean error its channel shows (where the output
        is not clamped), so rounding errors stop drifting the activations (AIMET's and
        NNCF's "bias correction"). Costs one more run of both models at build time.
    max_drop, validation
        Accuracy control: ``validation(model) -> float`` scores a model (higher is better;
        ``model(*inputs)`` returns its outputs like a :class:`~lepton_compiler.CompiledModel`).
        With ``max_drop``, layers whose own int8 error is largest go back to float, one at a
        time, until the score is within ``max_drop`` of the float model's
        (:mod:`lepton_compiler.optimize.accuracy_control`); ``summary()["accuracy"]`` says
        what was measured and which layers stayed float.
    """

    calibration_data: Iterable[Any] | None = None
    method: str = "minmax"
    percentile: float = 99.99
    per_channel: bool = True
    skip: Sequence[str] = ()
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    table: CalibrationTable | str | os.PathLike | None = None
    progress: bool | None = None
    max_drop: float | None = None
    validation: Callable[[Any], float] | None = None
    bias_correction: bool = False
    equalize: bool = False


@dataclass
class CalibrationTable:
    """Calibrated ranges per tensor, with the statistics they came from; JSON-serialisable.

    ``signature`` identifies the layer graph the table belongs to (tensor names and shapes);
    a table is refused for a model with a different graph.
    """

    method: str
    percentile: float
    signature: str
    # name -> {"shape", "min", "max", "lo", "hi"} and "sentinels" (a count) where calibration
    # saw mask values (-inf, finfo.min): the range is of the other values.
    tensors: dict[str, dict[str, Any]]

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: (t["lo"], t["hi"]) for name, t in self.tensors.items()}

    def channel_ranges(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-channel ranges (last axis) of the GEMM outputs calibration measured them for."""
        return {name: (np.asarray(t["channel_lo"]), np.asarray(t["channel_hi"]))
                for name, t in self.tensors.items() if "channel_lo" in t}

    def sentinels(self) -> set[str]:
        """Tensors that held sentinel values (+-inf, or beyond +-1e30: attention masks)."""
        return {name for name, t in self.tensors.items() if t.get("sentinels")}

    def to_json(self) -> str:
        return json.dumps({"version": TABLE_VERSION, "method": self.method,
                           "percentile": self.percentile, "signature": self.signature,
                           "tensors": self.tensors}, indent=1, sort_keys=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON (atomically)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationTable:
        """Read a table saved with :meth:`save`; QuantizationError names what is wrong."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise QuantizationError(f"{path}: calibration table not found") from None
        except (OSError, ValueError) as err:
            raise QuantizationError(f"{path}: not a calibration table ({err})") from None
        if not isinstance(raw, dict) or raw.get("version") != TABLE_VERSION:
            raise QuantizationError(f"{path}: not a version-{TABLE_VERSION} calibration table")
        try:
            tensors = {str(k): {"shape": [int(d) for d in v["shape"]],
                                "min": float(v["min"]), "max": float(v["max"]),
                                "lo": float(v["lo"]), "hi": float(v["hi"]),
                                **({"sentinels": int(v["sentinels"])}
                                   if "sentinels" in v else {}),
                                **({"channel_lo": [float(x) for x in v["channel_lo"]],
                                    "channel_hi": [float(x) for x in v["channel_hi"]]}
                                   if "channel_lo" in v else {}),
                                **({"method": str(v["method"])} if "method" in v else {})}
                       for k, v in raw["tensors"].items()}
            table = cls(str(raw["method"]), float(raw["percentile"]), str(raw["signature"]),
                        tensors)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise QuantizationError(f"{path}: malformed calibration table ({err})") from None
        for name, t in tensors.items():
            if not (np.isfinite(t["lo"]) and np.isfinite(t["hi"]) and t["lo"] <= t["hi"]):
                raise QuantizationError(f"{path}: tensor {name!r} has an invalid range "
                                        f"[{t['lo']}, {t['hi']}]")
        return table


@dataclass
class QuantizationResult:
    """What the quantize stage produced: the module, the integer graph and the table."""

    module: Any
    graph: QuantizedGraph
    table: CalibrationTable
    placement: list[Any] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Quantized layers, float layers with the reason, and the method."""
        summary = {"method": self.table.method,
                   "quantized": [lay.name for lay in self.graph.graph.layers
                                 if lay.name in self.graph.quantized],
                   "float": dict(self.graph.float_layers)}
        if self.graph.accuracy is not None:
            summary["accuracy"] = self.graph.accuracy
        return summary

    def reference(self, *args: Any, **kwargs: Any) -> Any:
        """Run the integer semantics in numpy (the bit-exact oracle of the compiled model)."""
        inputs = sample_dict(args[0] if len(args) == 1 and isinstance(args[0], Mapping)
                              else (kwargs or args), self.graph.graph, "reference input")
        outs, _ = run_reference(self.graph, inputs)
        return outs[0] if len(outs) == 1 else tuple(outs)


def check_config(config: Any) -> QuantConfig:
    """Validate a QuantConfig (OptionError names the bad field)."""
    if isinstance(config, str) and config == "int8":
        raise OptionError("quantize='int8' needs calibration data: pass "
                          "quantize=QuantConfig(calibration_data=...)")
    if not isinstance(config, QuantConfig):
        raise OptionError(f"quantize= takes a QuantConfig, not {type(config).__name__}")
    if config.method not in METHODS:
        raise OptionError(f"unknown calibration method {config.method!r}; "
                          f"choose one of {', '.join(METHODS)}")
    if not 50.0 < float(config.percentile) <= 100.0:
        raise OptionError(f"percentile must lie in (50, 100], got {config.percentile}")
    if config.calibration_data is None and config.table is None:
        raise OptionError("QuantConfig needs calibration_data or a calibration table")
    if config.max_drop is not None:
        drop = config.max_drop
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or \
                not np.isfinite(drop) or drop < 0:
            raise OptionError(f"max_drop must be a finite number >= 0, got {drop!r}")
        if not callable(config.validation):
            raise OptionError("max_drop= needs validation=, a function that scores a model "
                              "(higher is better)")
    elif config.validation is not None:
        raise OptionError("validation= is used with max_drop=; pass both")
    if isinstance(config.skip, str):
        raise OptionError("skip= takes a list of layer names, not a string")
    for name, override in config.overrides.items():
        if not isinstance(override, Mapping) or not set(override) <= {"float", "range"}:
            raise OptionError(f"override for {name!r} must be a dict with 'float' and/or "
                              "'range'")
        if "range" in override:
            lo, hi = _pair(override["range"], name)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise OptionError(f"override range for {name!r} must be finite with lo < hi")
    return config


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = value
        return float(lo), float(hi)
    except (TypeError, ValueError):
        raise OptionError(f"override range for {name!r} must be (lo, hi)") from None


def graph_signature(graph: LayerGraph) -> str:
    items = sorted((n, list(t.shape)) for n, t in graph.tensors.items() if t.dtype == "float32")
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def observed_tensors(graph: LayerGraph) -> list[str]:
    return [n for n, t in graph.tensors.items()
            if t.dtype == "float32" and n not in graph.inputs]


def _check_names(graph: LayerGraph, config: QuantConfig) -> None:
    layers = {lay.name for lay in graph.layers}
    known = layers | set(graph.inputs)
    unknown = [n for n in config.skip if n not in layers]
    unknown += [n for n in config.overrides if n not in known]
    if unknown:
        listed = ", ".join(lay.name for lay in graph.layers if lay.kind in COMPUTE_KINDS)
        raise OptionError(f"no layer named {', '.join(map(repr, unknown))}; the model's "
                          f"quantizable layers are: {listed}")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def sample_dict(sample: Any, graph: LayerGraph, what: str) -> dict[str, np.ndarray]:
    names = graph.inputs
    if isinstance(sample, Mapping):
        unknown = [k for k in sample if k not in names]
        missing = [n for n in names if n not in sample]
        if unknown or missing:
            raise CalibrationError(f"{what}: inputs {sorted(sample)} do not match the model's "
                                   f"inputs {names}")
        arrays = {n: _to_numpy(sample[n]) for n in names}
    else:
        items = list(sample) if isinstance(sample, (tuple, list)) else [sample]
        if len(items) != len(names):
            raise CalibrationError(f"{what}: {len(items)} array(s) given, the model takes "
                                   f"{len(names)} input(s) {names}")
        arrays = {n: _to_numpy(v) for n, v in zip(names, items, strict=True)}
    for n, a in arrays.items():
        want = graph.tensors[n].shape
        if tuple(a.shape) != tuple(want):
            raise CalibrationError(f"{what}: input {n!r} has shape {tuple(a.shape)}, the model "
                                   f"expects {tuple(want)}")
        if a.dtype.kind not in "fiu":
            raise CalibrationError(f"{what}: input {n!r} has dtype {a.dtype}, expected numbers")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise CalibrationError(f"{what}: input {n!r} contains NaN or Inf; clean the "
                                   "calibration data")
    return {n: a.astype(graph.tensors[n].dtype, copy=False) for n, a in arrays.items()}


def observer_model(mod: Any, graph: LayerGraph, observed: list[str], executor: Any) -> Any:
    """The float model, run by ``executor``, with every observed tensor as an output."""
    from tvm import relax

    from lepton_compiler import tvm_compat
    from lepton_compiler.passes.quantize import substitute

    func = mod["main"]
    tensor_var = {name: var for var, name in graph.var_names.items()}
    bb = relax.BlockBuilder()
    params = [relax.Var(tvm_compat.param_name(p), p.ty) for p in func.params]
    env = dict(zip(func.params, params, strict=True))
    with bb.function("main", params):
        with bb.dataflow():
            for block in func.body.blocks:
                for b in block.bindings:
                    env[b.var] = bb.emit(substitute(b.value, env.__getitem__))
            outs = [env[tensor_var[n]] for n in observed]
            gv = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(gv)
    built = tvm_compat.add_functions(bb.get(), tvm_compat.helper_functions(mod))
    return executor(built, list(graph.inputs), list(observed))


def calibrate(mod: Any, config: QuantConfig, executor: Any) -> tuple[LayerGraph, CalibrationTable]:
    """Stage ``calibrate``: read the layer graph of ``mod`` and calibrate it by running the
    float model with ``executor`` (``(module, input names, output names) -> callable``), or
    take the config's table."""
    from lepton_compiler import tvm_compat

    graph = read_graph(mod["main"])
    graph.helpers = tvm_compat.helper_functions(mod)
    check_partition(graph)  # the layer groups must contract to an acyclic kernel graph
    _check_names(graph, config)
    signature = graph_signature(graph)
    if config.table is not None:
        table = config.table if isinstance(config.table, CalibrationTable) else \
            CalibrationTable.load(config.table)
        if table.signature != signature:
            missing = sorted(set(observed_tensors(graph)) | set(graph.inputs) - set(table.tensors))
            raise QuantizationError(
                "the calibration table was made for a different model (graph signature "
                f"{table.signature}, this model {signature})"
                + (f"; it lacks tensors {', '.join(missing[:8])}" if missing else ""))
        return graph, _apply_overrides(table, config)
    samples = [sample_dict(s, graph, f"calibration sample {i}")
               for i, s in enumerate(config.calibration_data)]
    if not samples:
        raise CalibrationError("the calibration data is empty; pass at least one sample "
                               "(a few hundred representative inputs is typical)")
    observed = observed_tensors(graph)
    model = observer_model(mod, graph, observed, executor)
    stats = {n: Stats() for n in [*graph.inputs, *observed]
             if graph.tensors[n].dtype == "float32"}
    for lay in graph.layers:  # GEMM outputs may get one scale per channel
        if lay.kind in CHANNEL_OUTPUT_KINDS and lay.output in stats:
            stats[lay.output].channels = True
    passes = 1 if config.method == "minmax" else 2
    # Compute layers: their output -> their inputs (all finite in, inf out: an overflow).
    overflowing = {lay.output: lay.inputs for lay in graph.layers if lay.kind in COMPUTE_KINDS}

    def values(sample: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        outs = model(sample)
        outs = outs if isinstance(outs, tuple) else (outs,)
        got = {**{n: sample[n] for n in graph.inputs}, **dict(zip(observed, outs, strict=True))}
        for n, v in got.items():
            # -inf/finfo.min from a mask is data (a sentinel, see passes/calibrate.py); NaN,
            # or inf out of a matrix product or sum of finite inputs, is the float model
            # overflowing.
            if n in stats and (np.isnan(v).any() or (
                    n in overflowing and not np.all(np.isfinite(v))
                    and all(np.all(np.isfinite(got[i])) for i in overflowing[n] if i in got))):
                raise CalibrationError(f"tensor {n!r} is NaN or Inf on calibration sample "
                                       f"{index}; the float model overflows on it")
        return got

    with progress(passes * len(samples), f"calibrating ({config.method})",
                  config.progress) as bar:
        for histogram in (False, True)[:passes]:  # exact ranges first, then histograms
            if histogram:
                for st in stats.values():
                    st.start_histogram()
            for i, s in enumerate(samples):
                for n, v in values(s, i).items():
                    if n in stats:
                        (stats[n].update_histogram if histogram else stats[n].update_range)(v)
                bar.update(1)
    tensors = {}
    for n, st in stats.items():
        chosen = config.method
        if config.method == "auto":
            chosen, (lo, hi) = choose_method(st, float(config.percentile))
        else:
            lo, hi = choose_range(st, config.method, float(config.percentile))
        tensors[n] = {"shape": list(graph.tensors[n].shape), "min": st.min, "max": st.max,
                      "lo": float(lo), "hi": float(hi)}
        if config.method == "auto":
            tensors[n]["method"] = chosen
        if st.sentinels:
            tensors[n]["sentinels"] = st.sentinels
        if st.channel_min is not None and st.sentinels == 0:
            tensors[n]["channel_lo"] = [float(v) for v in np.minimum(st.channel_min, 0.0)]
            tensors[n]["channel_hi"] = [float(v) for v in np.maximum(st.channel_max, 0.0)]
    table = CalibrationTable(config.method, float(config.percentile), signature, tensors)
    return graph, _apply_overrides(table, config)


def prequantized(mod: Any) -> tuple[LayerGraph, CalibrationTable]:
    """The layer graph of a pre-quantized model and a table of its own quantization (each
    QuantizeLinear/DequantizeLinear pair's scale and zero point, as an int8 range)."""
    from lepton_compiler import tvm_compat

    graph = read_graph(mod["main"])
    graph.helpers = tvm_compat.helper_functions(mod)
    check_partition(graph)
    tensors = {}
    for name, p in graph.fixed.items():
        lo, hi = p.scale * (-128 - p.zero_point), p.scale * (127 - p.zero_point)
        tensors[name] = {"shape": list(graph.tensors[name].shape), "min": lo, "max": hi,
                         "lo": lo, "hi": hi}
    return graph, CalibrationTable("pre-quantized", 100.0, graph_signature(graph), tensors)


def _apply_overrides(table: CalibrationTable, config: QuantConfig) -> CalibrationTable:
    tensors = {n: dict(t) for n, t in table.tensors.items()}
    for name, override in config.overrides.items():
        if "range" in override and name in tensors:
            lo, hi = _pair(override["range"], name)
            tensors[name]["lo"], tensors[name]["hi"] = lo, hi
    return CalibrationTable(table.method, table.percentile, table.signature, tensors)


def plan(graph: LayerGraph, table: CalibrationTable, config: QuantConfig,
         reverted: set[str] = frozenset()) -> QuantizedGraph:
    """Stage ``quantize``: which layers run in int8 and their integer parameters (the
    ``partition`` stage emits the module); ``reverted``: layers accuracy control keeps in
    float."""
    skip = set(config.skip) | {n for n, o in config.overrides.items() if o.get("float")}
    qg = plan_quantization(graph, table.ranges(), skip | set(reverted),
                           bool(config.per_channel), table.sentinels(), table.channel_ranges())
    for name in reverted:
        qg.float_layers[name] = "kept in float by accuracy control (max_drop)"
    return qg


def correct_biases(mod: Any, graph: LayerGraph, table: CalibrationTable, qg: QuantizedGraph,
                   config: QuantConfig, executor: Any) -> QuantizedGraph:
    """Empirical bias correction (``QuantConfig(bias_correction=True)``).

    Each int8 conv2d/dense runs in its integer semantics (numpy reference) on its float
    inputs, quantized, over the calibration samples; the mean difference per output channel
    from the float output, where that lies inside the activation's linear range, is taken
    off its float bias, and the plan is made again. Each layer corrects its *own* error
    (weights and input rounding): correcting the network-level error of every layer at once
    would count an upstream drift again in each layer below it.
    """
    from lepton_compiler.passes.quantize import run_layer
    from lepton_compiler.target import reference as ref

    samples = [sample_dict(s, graph, f"calibration sample {i}")
               for i, s in enumerate(config.calibration_data or [])]
    layers = [lay for lay in graph.layers if lay.name in qg.quantized
              and lay.kind in ("conv2d", "dense")]
    if not samples or not layers:
        return qg
    observed = observed_tensors(graph)
    float_model = observer_model(mod, graph, observed, executor)
    sums: dict[str, Any] = {lay.name: 0.0 for lay in layers}
    counts: dict[str, Any] = {lay.name: 0.0 for lay in layers}
    for s in samples:
        outs = float_model(s)
        fv = {**s, **dict(zip(observed, outs if isinstance(outs, tuple) else (outs,),
                                strict=True))}
        for lay in layers:
            args = [ref.quantize(fv[t], qg.tensors[t].scale, qg.tensors[t].zero_point)
                    for t in lay.inputs]
            p = qg.tensors[lay.output]
            q = ref.dequantize(run_layer(lay, qg.params[lay.name], args,
                                         graph.tensors[lay.output].shape),
                               p.scale, p.zero_point).astype(np.float64)
            f = fv[lay.output].astype(np.float64)
            lo, hi = {"relu": (0.0, np.inf), "relu6": (0.0, 6.0)}.get(lay.act,
                                                                       (-np.inf, np.inf))
            linear = ((f > lo) & (f < hi)).reshape(-1, f.shape[-1])
            diff = np.where(linear, (q - f).reshape(linear.shape), 0.0)
            sums[lay.name] = sums[lay.name] + diff.sum(axis=0)
            counts[lay.name] = counts[lay.name] + linear.sum(axis=0)
    for lay in layers:
        error = sums[lay.name] / np.maximum(counts[lay.name], 1)
        base = lay.bias if lay.bias is not None else np.zeros(lay.weight.shape[-1])
        lay.bias = base - error
    return plan(graph, table, config)


def load_samples(path: str | os.PathLike) -> list[Any]:
    """Calibration samples from an ``.npz`` file (the CLI's ``--calib``).

    Each array holds one model input for every sample, stacked along a new leading axis
    (``[S, *input_shape]``); arrays are matched to inputs by name, or by position when saved
    with ``np.savez(path, a, b)`` (``arr_0``, ``arr_1``...).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration data not found") from None
    except (OSError, ValueError) as err:
        raise CalibrationError(f"{path}: not a readable .npz file ({err})") from None
    if not arrays:
        raise CalibrationError(f"{path}: the calibration data is empty")
    counts = {k: (a.shape[0] if a.ndim else 0) for k, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise CalibrationError(f"{path}: arrays hold different numbers of samples {counts}; "
                               "stack the samples of every input along axis 0")
    n = next(iter(counts.values()))
    positional = all(k == f"arr_{i}" for i, k in enumerate(arrays))
    if positional:
        return [tuple(arrays[f"arr_{i}"][s] for i in range(len(arrays))) for s in range(n)]
    return [{k: a[s] for k, a in arrays.items()} for s in range(n)]
