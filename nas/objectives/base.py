"""What an objective returns for one evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from nas.space import Encoding


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
