"""Accuracy-targeted quantization: keep the fewest layers in float that hold the metric drop
within a bound (``QuantConfig(max_drop=..., validation=fn)``).

The user's ``validation(model) -> float`` scores a model (higher is better: accuracy, mean
cosine, ...); ``model(*inputs)`` returns the outputs as numpy, like a
:class:`~lepton_compiler.CompiledModel`. The float model is scored once, then the int8 model.
While the drop exceeds ``max_drop``, the quantized layer whose own int8 error is largest (the
lowest isolated SQNR in the per-layer analysis) goes back to float, and the model is scored
again; layers are reverted one at a time, so the result keeps as many layers in int8 as this
greedy order allows. Every candidate runs on the host compiler (no NPU build per step); the
final build compiles the chosen plan once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lepton_compiler.errors import QuantizationError
from lepton_compiler.progress import progress


@dataclass
class AccuracyControl:
    """What accuracy control measured and decided."""

    max_drop: float
    float_metric: float
    int8_metric: float          # of the full int8 plan, before any layer was reverted
    final_metric: float
    reverted: list[str] = field(default_factory=list)  # layers kept in float, in order

    @property
    def drop(self) -> float:
        return self.float_metric - self.final_metric

    def to_dict(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "float_metric": self.float_metric,
                "int8_metric": self.int8_metric, "final_metric": self.final_metric,
                "drop": self.drop, "reverted": list(self.reverted)}


def _score(validation: Callable[[Any], float], model: Callable[..., Any], what: str) -> float:
    try:
        value = float(validation(model))
    except QuantizationError:
        raise
    except Exception as err:  # the user's function: report it as theirs
        raise QuantizationError(f"the validation function failed on the {what} model: "
                                f"{type(err).__name__}: {err}") from err
    if value != value:  # NaN
        raise QuantizationError(f"the validation function returned NaN for the {what} model")
    return value


def control(plan: Callable[[set[str]], Any], run: Callable[[Any], Callable[..., Any]],
            float_model: Callable[..., Any], ranking: Sequence[str],
            validation: Callable[[Any], float], max_drop: float,
            show_progress: bool | None = None) -> tuple[Any, AccuracyControl]:
    """Revert layers to float, in ``ranking`` order, until the drop is within ``max_drop``.

    ``plan(reverted)`` gives the integer plan with those layers in float; ``run(plan)`` a
    callable model of it; ``float_model`` the float model. Returns the chosen plan and
    what was measured.
    """
    base = _score(validation, float_model, "float")
    qg = plan(set())
    first = current = _score(validation, run(qg), "int8")
    reverted: list[str] = []
    order = list(ranking)
    with progress(len(order), "accuracy control", show_progress) as bar:
        while base - current > max_drop and order:
            reverted.append(order.pop(0))
            qg = plan(set(reverted))
            current = _score(validation, run(qg), "int8")
            bar.update(1)
    return qg, AccuracyControl(float(max_drop), base, first, current, reverted)
