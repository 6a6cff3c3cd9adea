"""What flows between a strategy and an objective: a :class:`Trial` to run (an architecture
at a fidelity) and its :class:`Evaluation`; and the :class:`Objective` protocol between them.

Base layer: every package of the flow uses these types; they import only the space's
:data:`~nas.space.Encoding` and the fidelity names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from nas.fidelity import HIGH_FIDELITY
from nas.space import Encoding


@dataclass(frozen=True)
class Trial:
    """One evaluation to run: an architecture at a fidelity."""

    encoding: Encoding
    fidelity: str = HIGH_FIDELITY


@dataclass
class Evaluation:
    """The outcome of evaluating one architecture at one fidelity.

    Attributes:
        value: the objective (larger is better); ``NaN`` when the evaluation failed.
        cost: cost in equivalent full evaluations (a full evaluation costs 1).
        status: ``"ok"`` or ``"failed"``.
        metrics: anything else measured (per-epoch accuracies, latency, ...).
        error: why it failed.
    """

    value: float
    cost: float = 1.0
    status: str = "ok"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


class Objective(Protocol):
    """Anything that evaluates an encoding at a fidelity."""

    def evaluate(self, encoding: Encoding, fidelity: str = "hi") -> Evaluation: ...
