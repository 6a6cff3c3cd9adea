"""What flows between a strategy and an objective: a :class:`Trial` to run (an architecture
at a fidelity) and its :class:`Evaluation`; and the :class:`Objective` protocol between them.

Base layer: every package of the flow uses these types; they import only the space's
:data:`~nas.space.Encoding` and the fidelity names.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nas.fidelity import HIGH_FIDELITY
from nas.space import Encoding


def linear_quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` with linear interpolation (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


#: The status of an evaluation stopped early by a pruning rule (``Evaluation.status``).
PRUNED = "pruned"
#: Every status a finished evaluation can have.
STATUSES = ("ok", "failed", PRUNED)


class StopRule(Protocol):
    """Asked after every validated epoch of a run whether the run should stop.

    Returns the reason to stop (one line), or ``None`` to go on. ``value`` is in the
    objective's units (validation accuracy in %).
    """

    def __call__(self, epoch: int, value: float) -> str | None: ...


@dataclass(frozen=True)
class EpochGate:
    """A pruning decision as plain data, so that it travels to any worker (JSON or pickle).

    Built by a strategy's pruning rule (:mod:`nas.strategies.pruning`) from what it has
    observed when the trial starts; the run itself only compares its own values. At an
    epoch listed in ``cutoffs`` the run stops when its value is below the ``quantile`` of
    the values other runs had at that epoch (with its own value among them when
    ``include_own``, as asynchronous successive halving ranks a rung).

    Attributes:
        rule: the rule's name, for the reason.
        cutoffs: epoch -> the values earlier runs reached at that epoch.
        quantile: in [0, 1]; 0.5 is the median.
        include_own: rank the run's own value with the others.
    """

    rule: str
    cutoffs: dict[int, tuple[float, ...]]
    quantile: float
    include_own: bool = False

    def threshold(self, epoch: int, value: float) -> float | None:
        """The value a run must reach at ``epoch`` to go on (``None``: no check there)."""
        others = self.cutoffs.get(epoch)
        if not others:
            return None
        return linear_quantile([*others, value] if self.include_own else others, self.quantile)

    def __call__(self, epoch: int, value: float) -> str | None:
        threshold = self.threshold(epoch, value)
        if threshold is None or not (math.isnan(value) or value < threshold):
            return None
        compared = len(self.cutoffs[epoch]) + int(self.include_own)
        return f"pruned by the {self.rule} rule after epoch {epoch}: {value:.2f} is below {threshold:.2f}, the {self.quantile:.0%} quantile of {compared} runs at that epoch"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "cutoffs": {str(k): list(v) for k, v in self.cutoffs.items()}, "quantile": self.quantile, "include_own": self.include_own}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EpochGate":
        return cls(data["rule"], {int(k): tuple(v) for k, v in data["cutoffs"].items()}, float(data["quantile"]), bool(data["include_own"]))


@dataclass(frozen=True)
class Trial:
    """One evaluation to run: an architecture at a fidelity.

    ``stop_rule`` (not part of the trial's identity) is asked after every validated epoch
    whether the run should stop; objectives that train epoch by epoch honour it.
    """

    encoding: Encoding
    fidelity: str = HIGH_FIDELITY
    stop_rule: StopRule | None = field(default=None, compare=False, repr=False)


@dataclass
class Evaluation:
    """The outcome of evaluating one architecture at one fidelity.

    Attributes:
        value: the objective (larger is better); ``NaN`` when the evaluation failed.
        cost: cost in equivalent full evaluations (a full evaluation costs 1).
        status: ``"ok"``, ``"failed"``, or ``"pruned"`` (stopped early by a pruning rule:
            ``value`` is the last validated epoch's, ``cost`` the epochs it ran).
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


def pruned_epoch(evaluation: Evaluation) -> int:
    """The epochs a pruned run trained (``metrics["epochs_run"]``)."""
    return int(evaluation.metrics.get("epochs_run", 0))


def evaluate_trial(objective: Objective, trial: Trial) -> Evaluation:
    """``objective``'s evaluation of ``trial``, handing it the trial's stop rule when it has one."""
    if trial.stop_rule is None:
        return objective.evaluate(trial.encoding, trial.fidelity)
    return objective.evaluate(trial.encoding, trial.fidelity, stop_rule=trial.stop_rule)  # type: ignore[call-arg]
