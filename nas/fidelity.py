"""Fidelity levels of an evaluation and the multi-fidelity schedule of thesis §5.2.4.

A *full* (high-fidelity, ``"hi"``) evaluation trains a candidate for ``hi_epochs``; a
low-fidelity (``"lo"``) one for ``lo_epochs < hi_epochs``. Costs are counted in
*equivalent full evaluations*: an evaluation of ``k`` epochs costs ``k / hi_epochs``.

Objectives that train report the validation value after every epoch ``k`` in
``Evaluation.metrics[epoch_metric_key(k)]``: a full evaluation therefore also tells what
a low-fidelity evaluation of the same architecture would have returned, which
multi-fidelity strategies take as a free low-fidelity observation.
"""
from __future__ import annotations

from dataclasses import dataclass

from nas.errors import NASError

#: The fidelity of a full evaluation (the one every strategy's "best" is about).
HIGH_FIDELITY = "hi"
#: The fidelity of a partial evaluation (``lo_epochs`` of training).
LOW_FIDELITY = "lo"


def epoch_metric_key(epoch: int) -> str:
    """Key of ``Evaluation.metrics`` holding the objective value after ``epoch`` epochs (1-based)."""
    return f"value_at_epoch_{epoch}"


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
    """

    hi_epochs: int = 3
    lo_epochs: int | None = None
    p: int = 5
    q: int = 3
    f: int = 10

    def __post_init__(self) -> None:
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
        """The fidelity levels, cheapest first: ``("hi",)`` or ``("lo", "hi")``."""
        return (LOW_FIDELITY, HIGH_FIDELITY) if self.multi_fidelity else (HIGH_FIDELITY,)

    def epochs(self, fidelity: str) -> int:
        """Training epochs of an evaluation at ``fidelity``."""
        if fidelity == HIGH_FIDELITY:
            return self.hi_epochs
        if fidelity == LOW_FIDELITY and self.lo_epochs is not None:
            return self.lo_epochs
        raise NASError(f"Unknown fidelity {fidelity!r}; this schedule has the fidelities {', '.join(self.fidelities)}.")

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
