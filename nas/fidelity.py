"""Fidelity levels of an evaluation and the multi-fidelity schedule of thesis §5.2.4.

A *full* (high-fidelity, ``"hi"``) evaluation trains a candidate for ``hi_epochs``; a
low-fidelity (``"lo"``) one for ``lo_epochs < hi_epochs``. Costs are counted in
*equivalent full evaluations*: an evaluation of ``k`` epochs costs ``k / hi_epochs``.

Any other number of epochs is a fidelity too, named by the number itself (``"33"``):
Hyperband's rungs and the intermediate ``levels`` of a schedule are such fidelities.

Objectives that train report the validation value after every epoch ``k`` in
``Evaluation.metrics[epoch_metric_key(k)]``: a full evaluation therefore also tells what
a low-fidelity evaluation of the same architecture would have returned, which
multi-fidelity strategies take as a free low-fidelity observation. Objectives whose low
fidelity is not a number of epochs (a table's proxy column) report it under
``fidelity_metric_key(fidelity)`` instead.
"""
from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

from nas.errors import NASError

#: The fidelity of a full evaluation (the one every strategy's "best" is about).
HIGH_FIDELITY = "hi"
#: The fidelity of a partial evaluation (``lo_epochs`` of training).
LOW_FIDELITY = "lo"


def epoch_metric_key(epoch: int) -> str:
    """Key of ``Evaluation.metrics`` holding the objective value after ``epoch`` epochs (1-based)."""
    return f"value_at_epoch_{epoch}"


def epoch_of_metric_key(key: str) -> int | None:
    """The epoch of an :func:`epoch_metric_key` (``None`` for any other key)."""
    prefix = "value_at_epoch_"
    return int(key[len(prefix):]) if key.startswith(prefix) and key[len(prefix):].isdigit() else None


def fidelity_metric_key(fidelity: str) -> str:
    """Key of ``Evaluation.metrics`` holding the value a named ``fidelity`` would have returned."""
    return f"value_at_fidelity_{fidelity}"


class TrainedEpochs:
    """How far each architecture has been trained: what continuing its run costs.

    A run resumed from its checkpoint pays only the epochs beyond those already run, and a
    shorter evaluation of a run that went further pays nothing (its epochs were validated).
    Amounts may be any monotone unit (epochs, or cost fractions).
    """

    def __init__(self) -> None:
        self.reached: dict[Hashable, float] = {}

    def charge(self, key: Hashable, amount: float) -> float:
        """Record that ``key`` runs to ``amount``; return the part not run before."""
        before = self.reached.get(key, 0)
        self.reached[key] = max(before, amount)
        return max(0, amount - before)


@dataclass(frozen=True)
class FidelitySchedule:
    """How long evaluations train, and how a multi-fidelity search mixes them.

    Every iteration of a multi-fidelity search runs ``p`` low-fidelity evaluations; every
    ``f``-th iteration (the ``f``-th, ``2f``-th, ...) also runs ``q`` full evaluations, so
    each of them is chosen with the low-fidelity results of the iterations before it.
    Thesis values (NAS-Bench-201, §5.3.2): ``p=5, q=3, f=10`` with 12 and 200 epochs.

    Attributes:
        hi_epochs: training epochs of a full evaluation.
        lo_epochs: training epochs of a low-fidelity evaluation; ``None`` for a
            mono-fidelity search.
        p: low-fidelity evaluations per iteration.
        q: full evaluations every ``f`` iterations.
        f: iterations between two rounds of full evaluations.
        levels: epochs of further fidelities between ``lo_epochs`` and ``hi_epochs`` (named by
            their number, e.g. ``"33"``), ascending; multi-fidelity BO gives each a head and
            observes it for free from longer runs.
    """

    hi_epochs: int = 3
    lo_epochs: int | None = None
    p: int = 5
    q: int = 3
    f: int = 10
    levels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        if self.levels and (self.lo_epochs is None or list(self.levels) != sorted(set(self.levels)) or not self.lo_epochs < self.levels[0] <= self.levels[-1] < self.hi_epochs):
            raise NASError(
                f"The fidelity schedule's levels must be ascending epochs strictly between lo_epochs and hi_epochs, got {list(self.levels)} "
                f"with lo_epochs={self.lo_epochs}, hi_epochs={self.hi_epochs}."
            )
        for name in ("hi_epochs", "p", "q", "f") + (("lo_epochs",) if self.lo_epochs is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NASError(f"The fidelity schedule's {name} must be a positive whole number, got {value!r}.")
        if self.lo_epochs is not None and self.lo_epochs >= self.hi_epochs:
            raise NASError(
                f"A low-fidelity evaluation must train for fewer epochs than a full one: got lo_epochs={self.lo_epochs} "
                f">= hi_epochs={self.hi_epochs}; lower lo_epochs, or set it to null for a mono-fidelity search."
            )

    @property
    def multi_fidelity(self) -> bool:
        return self.lo_epochs is not None

    @property
    def fidelities(self) -> tuple[str, ...]:
        """The fidelity levels, cheapest first: ``("hi",)``, ``("lo", "hi")`` or ``("lo", "<level>", ..., "hi")``."""
        if not self.multi_fidelity:
            return (HIGH_FIDELITY,)
        return (LOW_FIDELITY, *(str(e) for e in self.levels), HIGH_FIDELITY)

    def epochs(self, fidelity: str) -> int:
        """Training epochs of an evaluation at ``fidelity``: a name of the schedule, or a
        number of epochs from 1 to ``hi_epochs``."""
        if fidelity == HIGH_FIDELITY:
            return self.hi_epochs
        if fidelity == LOW_FIDELITY and self.lo_epochs is not None:
            return self.lo_epochs
        text = str(fidelity)
        if text.isdigit():
            epochs = int(text)
            if not 1 <= epochs <= self.hi_epochs:
                raise NASError(f"A fidelity of {epochs} epochs is outside 1..{self.hi_epochs}, the epochs of a full evaluation.")
            return epochs
        raise NASError(f"Unknown fidelity {fidelity!r}; this schedule has the fidelities {', '.join(self.fidelities)}, or any number of epochs 1..{self.hi_epochs}.")

    def name(self, epochs: int) -> str:
        """The fidelity of an evaluation of ``epochs`` epochs (``"hi"``, ``"lo"`` or the number)."""
        if epochs == self.hi_epochs:
            return HIGH_FIDELITY
        if epochs == self.lo_epochs:
            return LOW_FIDELITY
        return str(self.epochs(str(epochs)))

    def geometric_rungs(self, eta: int, min_epochs: int | None = None) -> tuple[str, ...]:
        """Hyperband's resources (Li et al., 2018), cheapest first: ``hi_epochs * eta^-s`` for
        ``s = s_max .. 0``, rounded, with ``s_max`` the largest ``s`` that keeps at least
        ``min_epochs`` epochs (default ``lo_epochs``, 1 without a low fidelity)."""
        floor = min_epochs or self.lo_epochs or 1
        if not 1 <= floor < self.hi_epochs:
            raise NASError(f"The cheapest rung must train 1..{self.hi_epochs - 1} epochs, got {floor}.")
        s_max = int(math.floor(math.log(self.hi_epochs / floor) / math.log(eta) + 1e-9))
        epochs = sorted({max(floor, round(self.hi_epochs * eta ** (-s))) for s in range(s_max, -1, -1)})
        return tuple(self.name(e) for e in epochs)

    def cost(self, fidelity: str) -> float:
        """Cost of one evaluation at ``fidelity`` in equivalent full evaluations."""
        return self.epochs(fidelity) / self.hi_epochs

    def trials_in_iteration(self, iteration: int) -> dict[str, int]:
        """Evaluations per fidelity in 0-based ``iteration`` of a multi-fidelity search
        (full evaluations first: they are the ones a capped batch must not starve)."""
        if not self.multi_fidelity:
            raise NASError("A mono-fidelity schedule has no multi-fidelity iterations; set fidelity.lo_epochs (e.g. fidelity=multi).")
        return {HIGH_FIDELITY: self.q if (iteration + 1) % self.f == 0 else 0, LOW_FIDELITY: self.p}

    @property
    def cycle_cost(self) -> float:
        """Cost of ``f`` iterations (one round of full evaluations) in equivalent full evaluations."""
        return self.f * self.p * self.cost(LOW_FIDELITY) + self.q
