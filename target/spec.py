"""The Lepton NPU spec: one TOML file loaded into frozen, validated dataclasses.

Every consumer takes a :class:`LeptonSpec` explicitly; none holds a hardware number of its
own. ``fingerprint()`` is stable across runs and machines and is stamped into artifacts and
tuning records.

>>> spec = load_spec()                 # the bundled v1 machine
>>> spec.matrix.macs_per_cycle
256
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from lepton_compiler.errors import SpecError

if sys.version_info >= (3, 11):
    import tomllib as toml
else:  # Python 3.10: the same parser, as a package (a declared dependency there)
    import tomli as toml

DEFAULT_SPEC = "lepton_v1.toml"

_INT_DTYPES = {"int8": 1, "int16": 2, "int32": 4}
_VECTOR_OPS = ("add", "mul", "shift_right_round", "min", "max", "cast_int8_saturate",
               "mul_add", "lut", "div")


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class Machine:
    """Identity and clock of the machine."""

    name: str
    clock_hz: int

    def __post_init__(self) -> None:
        _require(bool(self.name), "machine.name", "must be a non-empty string")
        _require(self.clock_hz > 0, "machine.clock_hz", f"must be > 0, got {self.clock_hz}")


@dataclass(frozen=True)
class MatrixEngine:
    """The GEMM engine: ``tile_m x tile_n x tile_k`` int8 tile into int32 accumulators."""

    input_dtype: str
    weight_dtype: str
    accumulator_dtype: str
    tile_m: int
    tile_n: int
    tile_k: int

    def __post_init__(self) -> None:
        for key in ("input_dtype", "weight_dtype", "accumulator_dtype"):
            value = getattr(self, key)
            _require(value in _INT_DTYPES, f"matrix.{key}",
                     f"must be one of {', '.join(_INT_DTYPES)}, got {value!r}")
        for key in ("tile_m", "tile_n", "tile_k"):
            value = getattr(self, key)
            _require(_is_power_of_two(value), f"matrix.{key}",
                     f"must be a positive power of two, got {value}")

    @property
    def macs_per_cycle(self) -> int:
        """Peak multiply-accumulates per cycle (one output tile per cycle)."""
        return self.tile_m * self.tile_n

    @property
    def input_tile_bytes(self) -> int:
        return self.tile_m * self.tile_k * _INT_DTYPES[self.input_dtype]

    @property
    def weight_tile_bytes(self) -> int:
        return self.tile_k * self.tile_n * _INT_DTYPES[self.weight_dtype]

    @property
    def accumulator_tile_bytes(self) -> int:
        return self.tile_m * self.tile_n * _INT_DTYPES[self.accumulator_dtype]


@dataclass(frozen=True)
class VectorUnit:
    """The vector unit: ``lanes`` lanes of ``dtype`` and the ops it supports."""

    lanes: int
    dtype: str
    ops: tuple[str, ...]
    #: Cycles of one ``div`` (integer divide or square root of every lane: a radix-2 divider
    #: that retires one quotient bit per cycle); every other op takes one cycle.
    div_cycles: int = 32

    def __post_init__(self) -> None:
        _require(_is_power_of_two(self.lanes), "vector.lanes",
                 f"must be a positive power of two, got {self.lanes}")
        _require(self.div_cycles > 0, "vector.div_cycles",
                 f"must be > 0, got {self.div_cycles}")
        _require(self.dtype in _INT_DTYPES, "vector.dtype", f"unsupported dtype {self.dtype!r}")
        unknown = [op for op in self.ops if op not in _VECTOR_OPS]
        _require(not unknown, "vector.ops",
                 f"unknown op(s) {', '.join(unknown)}; known: {', '.join(_VECTOR_OPS)}")


@dataclass(frozen=True)
class Sram:
    """On-chip buffers, in bytes."""

    input_bytes: int
    weight_bytes: int
    accumulator_bytes: int


@dataclass(frozen=True)
class Dma:
    """DRAM <-> SRAM transfers: bandwidth and fixed cost per transfer."""

    bytes_per_cycle: int
    fixed_cycles: int

    def __post_init__(self) -> None:
        _require(self.bytes_per_cycle > 0, "dma.bytes_per_cycle",
                 f"must be > 0, got {self.bytes_per_cycle}")
        _require(self.fixed_cycles >= 0, "dma.fixed_cycles",
                 f"must be >= 0, got {self.fixed_cycles}")

    def cycles(self, nbytes: int) -> int:
        """Cycles one transfer of ``nbytes`` takes."""
        return self.fixed_cycles + -(-nbytes // self.bytes_per_cycle)


@dataclass(frozen=True)
class HostFallback:
    """What the sim charges for a kernel that runs on the host CPU instead of the NPU, in NPU
    clock cycles: ``call_cycles`` for the hand-off (interrupt, cache maintenance, the round
    trip through DRAM), then its MACs at ``macs_per_cycle`` and the bytes it reads and writes
    at ``bytes_per_cycle``. A stated model, not a measurement: it lets a profile total NPU and
    host work in one unit."""

    macs_per_cycle: int
    bytes_per_cycle: int
    call_cycles: int

    def __post_init__(self) -> None:
        for key in ("macs_per_cycle", "bytes_per_cycle"):
            _require(getattr(self, key) > 0, f"host_fallback.{key}",
                     f"must be > 0, got {getattr(self, key)}")
        _require(self.call_cycles >= 0, "host_fallback.call_cycles",
                 f"must be >= 0, got {self.call_cycles}")


#: A spec without a [host_fallback] section (one written before it existed) gets these.
DEFAULT_HOST_FALLBACK = {"macs_per_cycle": 8, "bytes_per_cycle": 8, "call_cycles": 2000}


@dataclass(frozen=True)
class Operands:
    """Quantization schemes of the operands the engine accepts."""

    weights: str
    activations: str


@dataclass(frozen=True)
class LeptonSpec:
    """A complete, validated Lepton machine description."""

    machine: Machine
    matrix: MatrixEngine
    vector: VectorUnit
    sram: Sram
    dma: Dma
    operands: Operands
    host_fallback: HostFallback = field(
        default_factory=lambda: HostFallback(**DEFAULT_HOST_FALLBACK))

    def __post_init__(self) -> None:
        m = self.matrix
        for scope, need in (("input_bytes", m.input_tile_bytes),
                            ("weight_bytes", m.weight_tile_bytes),
                            ("accumulator_bytes", m.accumulator_tile_bytes)):
            have = getattr(self.sram, scope)
            _require(have >= need, f"sram.{scope}",
                     f"{have} bytes cannot hold one {m.tile_m}x{m.tile_n}x{m.tile_k} tile "
                     f"({need} bytes)")

    @property
    def name(self) -> str:
        return self.machine.name

    @property
    def peak_macs_per_second(self) -> int:
        return self.matrix.macs_per_cycle * self.machine.clock_hz

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (the TOML's structure)."""
        data = asdict(self)
        data["vector"]["ops"] = list(self.vector.ops)
        return data

    def fingerprint(self) -> str:
        """A stable 16-hex-digit hash of every field (name included)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise SpecError(f"spec field {field}: {message}")


_SECTIONS: dict[str, type] = {
    "machine": Machine, "matrix": MatrixEngine, "vector": VectorUnit,
    "sram": Sram, "dma": Dma, "operands": Operands, "host_fallback": HostFallback,
}
_OPTIONAL = {"host_fallback": DEFAULT_HOST_FALLBACK}


def _section(name: str, cls: type, raw: object, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: section [{name}] is missing or not a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}")
    optional = {f.name for f in fields(cls) if f.default is not MISSING}
    missing = sorted(set(known) - set(raw) - optional)
    if missing:
        raise SpecError(f"{where}: missing key(s) {', '.join(f'{name}.{k}' for k in missing)}")
    values = {}
    for key, f in known.items():
        if key not in raw:
            continue  # an optional key: the dataclass default
        value = raw[key]
        expected = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if expected == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            raise SpecError(f"{where}: {name}.{key} must be an integer, got {value!r}")
        if expected == "str" and not isinstance(value, str):
            raise SpecError(f"{where}: {name}.{key} must be a string, got {value!r}")
        if expected.startswith("tuple"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SpecError(f"{where}: {name}.{key} must be a list of strings")
            value = tuple(value)
        values[key] = value
    try:
        return cls(**values)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from None


def spec_from_dict(data: Mapping[str, Any], where: str = "spec") -> LeptonSpec:
    """Build and validate a spec from plain data shaped like the TOML file."""
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise SpecError(f"{where}: unknown section(s) {', '.join(f'[{s}]' for s in unknown)}")
    parts = {name: _section(name, cls, data.get(name, _OPTIONAL.get(name)), where)
             for name, cls in _SECTIONS.items()}
    try:
        return LeptonSpec(**parts)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from None


def load_spec(source: str | os.PathLike | Mapping[str, Any] | LeptonSpec | None = None
              ) -> LeptonSpec:
    """Load a spec: ``None`` for the bundled v1 machine, a TOML path, a dict, or a spec.

    Raises
    ------
    SpecError
        Naming the file and the field at fault (unknown key, missing key, bad value, a tile
        that is not a power of two, SRAM too small for one tile).
    """
    if isinstance(source, LeptonSpec):
        return source
    if isinstance(source, Mapping):
        return spec_from_dict(source)
    if source is None:
        text = resources.files("lepton_compiler.target").joinpath(DEFAULT_SPEC).read_text()
        where = DEFAULT_SPEC
    else:
        path = Path(source)
        where = str(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise SpecError(f"{path}: cannot read spec file ({err.strerror})") from None
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as err:
        raise SpecError(f"{where}: not valid TOML ({err})") from None
    return spec_from_dict(data, where)
