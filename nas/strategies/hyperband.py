"""Successive halving and Hyperband (Li et al., 2018): the multi-fidelity baseline.

The rungs are Li et al.'s resources by default: ``hi_epochs * eta^-s`` epochs for
``s = s_max .. 0`` (e.g. 1, 4, 11, 33, 98 epochs for 98 epochs and ``eta = 3``), or the
fidelities of the schedule (``rungs="schedule"``: ``lo`` then ``hi`` for a table with a
proxy column), or any ascending list of epochs. A *bracket* evaluates ``n`` random
architectures at its first rung; once all of a rung's results are in, the best
``max(1, n // eta)`` of them (failures never) are promoted to the next rung, until the last
rung. A promoted trial is the same architecture at more epochs: an objective that continues
runs (a checkpoint, or a surrogate benchmark's learning curve) charges only the extra epochs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from collections.abc import Sequence as SequenceType
from dataclasses import dataclass, field

from nas.errors import NASError
from nas.fidelity import FidelitySchedule
from nas.trial import Evaluation
from nas.space import Encoding, SearchSpace
from nas.strategies.base import Trial
from nas.strategies.multifidelity import MultiFidelityStrategy


@dataclass
class Bracket:
    """One run of successive halving.

    Attributes:
        rung: index of the current rung in the strategy's levels.
        members: the architectures at the current rung.
        queued: members not proposed yet.
        results: values of the members observed at the current rung (``NaN``: failed).
    """

    rung: int
    members: list[Encoding]
    queued: list[Encoding]
    results: dict[Encoding, float] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.members)


class SuccessiveHalving(MultiFidelityStrategy):
    """Successive halving: every bracket starts ``bracket_size`` random architectures at the
    cheapest rung and keeps the best ``1 / eta`` of each rung for the next.

    :meth:`propose` returns the queued trials of the open brackets, oldest first, and
    opens a new bracket only when none has a trial ready (all wait for results), so a
    sequential search runs brackets one after the other and parallel workers stay busy.

    Args:
        space: the search space.
        fidelity: the schedule: epochs of a full evaluation, and of the cheapest rung
            (``lo_epochs``).
        seed: randomness of the architectures drawn for each bracket.
        eta: the promotion ratio (Li et al.: 3).
        bracket_size: architectures at the first rung of a bracket (default ``eta^s_max``,
            with ``s_max + 1`` rungs: Li et al.'s).
        rungs: ``"geometric"`` (Li et al.'s resources, see the module doc), ``"schedule"``
            (the schedule's fidelities), or ascending epochs ending at ``hi_epochs``.
        min_epochs: the cheapest geometric rung's epochs at least (default ``lo_epochs``).
    """

    def __init__(
        self,
        space: SearchSpace,
        fidelity: FidelitySchedule,
        seed: int = 0,
        eta: int = 3,
        bracket_size: int | None = None,
        rungs: str | SequenceType[int] = "geometric",
        min_epochs: int | None = None,
    ) -> None:
        if eta < 2:
            raise NASError(f"The promotion ratio eta must be at least 2, got {eta}.")
        super().__init__(space, fidelity, seed, levels=self._rung_names(fidelity, eta, rungs, min_epochs))
        if bracket_size is None:
            bracket_size = eta ** (len(self.levels) - 1)
        if bracket_size < 1:
            raise NASError(f"bracket_size must be a positive number of architectures, got {bracket_size}.")
        self.eta = eta
        self.bracket_size = bracket_size
        self.default_batch_size = bracket_size
        self.brackets: list[Bracket] = []  # open brackets, oldest first
        self.brackets_started = 0
        self._bracket_of: dict[Trial, Bracket] = {}

    @staticmethod
    def _rung_names(schedule: FidelitySchedule, eta: int, rungs: str | SequenceType[int], min_epochs: int | None) -> tuple[str, ...]:
        if rungs == "geometric":
            return schedule.geometric_rungs(eta, min_epochs)
        if rungs == "schedule":
            return schedule.fidelities
        if isinstance(rungs, str):
            raise NASError(f"Unknown rungs {rungs!r}; use 'geometric', 'schedule' or a list of epochs.")
        epochs = [int(e) for e in rungs]
        if len(epochs) < 2 or epochs != sorted(set(epochs)) or epochs[-1] != schedule.hi_epochs:
            raise NASError(f"Hyperband's rungs must be at least two ascending epochs ending at hi_epochs={schedule.hi_epochs}, got {epochs}.")
        return tuple(schedule.name(e) for e in epochs)

    def bracket_plan(self, index: int) -> tuple[int, int]:
        """First rung and size of the ``index``-th bracket (0-based)."""
        return 0, self.bracket_size

    def propose(self, n: int | None = None) -> list[Trial]:
        n = n or self.default_batch_size
        trials: list[Trial] = []
        for bracket in self.brackets:
            trials += self._take(bracket, n - len(trials))
        if not trials:
            rung, size = self.bracket_plan(self.brackets_started)
            members = self.new_members(size, rung)
            if not members:
                return []  # the space is exhausted
            bracket = Bracket(rung, members, list(members))
            self.brackets.append(bracket)
            self.brackets_started += 1
            trials = self._take(bracket, n)
        return trials

    def new_members(self, size: int, rung: int) -> list[Encoding]:
        """The architectures a new bracket starts at ``rung`` with: random ones (Li et al.)."""
        return self.random_unseen(size)

    def _take(self, bracket: Bracket, n: int) -> list[Trial]:
        picked, bracket.queued = bracket.queued[:n], bracket.queued[n:]
        trials = self._mark_trials(self.levels[bracket.rung], picked)
        self._bracket_of.update((t, bracket) for t in trials)
        return trials

    def observe(self, trials: Sequence[Trial], evaluations: Sequence[Evaluation]) -> None:
        super().observe(trials, evaluations)
        for trial, evaluation in zip(trials, evaluations):
            bracket = self._bracket_of.pop(Trial(tuple(trial.encoding), trial.fidelity), None)
            if bracket is None:
                continue  # not proposed by a bracket (e.g. told directly)
            bracket.results[tuple(trial.encoding)] = float(evaluation.value) if evaluation.status == "ok" else math.nan
            if bracket.complete:
                self._promote(bracket)

    def release(self, trials: Sequence[Trial]) -> None:
        """Forget proposals that will not be evaluated: they go back to their bracket's queue."""
        super().release(trials)
        for trial in reversed(trials):
            bracket = self._bracket_of.pop(Trial(tuple(trial.encoding), trial.fidelity), None)
            if bracket is not None:
                bracket.queued.insert(0, tuple(trial.encoding))

    def _promote(self, bracket: Bracket) -> None:
        """Move a bracket whose rung is complete to its next rung, or close it."""
        succeeded = [enc for enc in bracket.members if not math.isnan(bracket.results[enc])]
        # Stable sort: ties keep the order in which the rung was drawn, so runs are reproducible.
        ranked = sorted(succeeded, key=lambda enc: -bracket.results[enc])
        keep = ranked[: max(1, len(bracket.members) // self.eta)]
        if bracket.rung + 1 == len(self.levels) or not keep:
            self.brackets.remove(bracket)
            return
        bracket.rung += 1
        bracket.members, bracket.queued, bracket.results = keep, list(keep), {}


class Hyperband(SuccessiveHalving):
    """Hyperband: successive halving brackets that start at every rung in turn, from the most
    exploratory (cheapest first rung, ``bracket_size`` architectures) to plain full
    evaluations, then again. With the default rungs and bracket size these are Li et al.'s
    brackets exactly.

    With ``R`` rungs (``s_max = R - 1``), bracket ``s`` (``s_max`` down to 0) starts at rung
    ``s_max - s`` with ``ceil(bracket_size * (s_max + 1) / ((s + 1) * eta^(s_max - s)))``
    architectures: Li et al.'s sizes (``ceil((s_max + 1) eta^s / (s + 1))``, which give
    every bracket about the same budget) scaled so the first bracket has ``bracket_size``.
    """

    def bracket_plan(self, index: int) -> tuple[int, int]:
        s_max = len(self.levels) - 1
        s = s_max - index % (s_max + 1)
        return s_max - s, math.ceil(self.bracket_size * (s_max + 1) / ((s + 1) * self.eta ** (s_max - s)))
