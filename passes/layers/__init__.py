"""The int8 layer kinds: one module per kind (see ``base.py`` for what a kind owns).

Every module of this package that defines ``KINDS`` is a kind module and is registered at
import; adding a layer kind is adding one file. ``REGISTRY`` maps kind names to kinds,
:func:`candidates` gives the kinds that may start at a Relax op, in matching order.
"""

from __future__ import annotations

import importlib
import pkgutil

from lepton_compiler.passes.layers.base import LayerKind


def _discover() -> dict[str, LayerKind]:
    found: dict[str, LayerKind] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for kind in getattr(module, "KINDS", ()):
            if kind.name in found or kind.name == "float":
                raise ValueError(f"layer kind {kind.name!r} is defined twice ({info.name})")
            found[kind.name] = kind
    return found


#: Kind name -> kind, for every registered kind.
REGISTRY: dict[str, LayerKind] = _discover()


def candidates(op: str) -> list[LayerKind]:
    """The kinds that may start at Relax op ``op``, in matching order."""
    return sorted((k for k in REGISTRY.values() if op in k.ops),
                  key=lambda k: (k.priority, k.name))


def kind_of(name: str) -> LayerKind | None:
    """The registered kind called ``name`` (``None`` for float layers)."""
    return REGISTRY.get(name)


def compute_kinds() -> tuple[str, ...]:
    """Kinds whose output gets its own calibrated range."""
    return tuple(n for n, k in REGISTRY.items() if k.compute)


__all__ = ["REGISTRY", "LayerKind", "candidates", "compute_kinds", "kind_of"]
