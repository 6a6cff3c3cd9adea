"""Hyperband whose brackets the deep-ensemble surrogate fills (BOHB, Falkner et al., 2018,
with the thesis' ensemble, one head per rung, in place of BOHB's kernel density estimates)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from nas.errors import NASError
from nas.fidelity import FidelitySchedule
from nas.space import Encoding, SearchSpace
from nas.strategies.bo import SurrogateFactory, SurrogateGuided
from nas.strategies.hyperband import Hyperband
from nas.surrogate.model import EnsembleSurrogate


class ModelBasedHyperband(SurrogateGuided, Hyperband):
    """Hyperband's brackets and promotions, with new architectures chosen by acquisition.

    As in BOHB: the model is the head of the most expensive rung that has at least
    ``min_points`` successful observations (cheaper rungs' heads train the shared trunk
    first, then that head); a share ``random_fraction`` of every new bracket is drawn at
    random, which keeps the search exploring where the model is wrong; until some rung has
    ``min_points`` observations, brackets are random, as Hyperband's. Continued runs report
    every epoch, so the rungs below a promotion are observed for free.

    Args:
        space, fidelity, seed, eta, bracket_size, rungs, min_epochs: as :class:`Hyperband`.
        surrogate: a factory ``(space=, seed=, pretraining=, fidelities=) -> EnsembleSurrogate``
            (the ``ensemble`` config group), or a ready surrogate with a head per rung.
        pretraining, acquisition, pool_size: as :class:`~nas.strategies.bo.BayesianOptimization`.
        random_fraction: the share of each new bracket drawn at random (BOHB: 1/3).
        min_points: observations a rung needs to be modelled (``None``: the number of
            variables plus one, BOHB's rule).
    """

    def __init__(
        self,
        space: SearchSpace,
        surrogate: SurrogateFactory | EnsembleSurrogate,
        fidelity: FidelitySchedule,
        seed: int = 0,
        eta: int = 3,
        bracket_size: int | None = None,
        rungs: str | Sequence[int] = "geometric",
        min_epochs: int | None = None,
        pretraining: str = "none",
        acquisition: str = "pi",
        pool_size: int = 5000,
        random_fraction: float = 1 / 3,
        min_points: int | None = None,
    ) -> None:
        Hyperband.__init__(self, space, fidelity, seed, eta, bracket_size, rungs, min_epochs)
        if not 0 <= random_fraction <= 1:
            raise NASError(f"random_fraction is the share of each bracket drawn at random, between 0 and 1, got {random_fraction}.")
        self._init_surrogate(surrogate, seed, pretraining, acquisition, pool_size, fidelities=self.levels)
        self.random_fraction = float(random_fraction)
        self.min_points = space.num_variables + 1 if min_points is None else int(min_points)
        if self.min_points < 1:
            raise NASError(f"min_points must be a positive number of observations, got {min_points}.")
        self._fitted_on = {level: 0 for level in self.levels}

    def model_level(self) -> str | None:
        """The most expensive rung with ``min_points`` successful observations (``None``: none yet)."""
        return next((level for level in reversed(self.levels) if sum(not math.isnan(v) for v in self.observations[level].values()) >= self.min_points), None)

    def _fit(self, model: str) -> None:
        """Fit the heads of the rungs up to ``model`` whose data grew, cheapest first; the
        ``model`` head always, so that it stays in step with the trunk."""
        for level in self.levels[: self.levels.index(model) + 1]:
            count = len(self.observations[level])
            if count and (count != self._fitted_on[level] or level == model):
                self.surrogate.fit(*self.observations_at(level), level)
                self._fitted_on[level] = count

    def new_members(self, size: int, rung: int) -> list[Encoding]:
        model = self.model_level()
        if model is None:
            return self.random_unseen(size)
        chosen = size - int((torch.rand(size, generator=self.generator) < self.random_fraction).sum())
        picks: list[Encoding] = []
        if chosen:
            self._fit(model)
            observed = self.observations[model]
            codes, features = self._candidates(list(observed), list(observed.values()))
            picks = self._select(chosen, codes, features, self.seen | self.pending, float(self.observations_at(model)[1].max()), model)
        self.pending.update(picks)  # the random rest must not draw them again
        try:
            return picks + self.random_unseen(size - len(picks))
        finally:
            self.pending.difference_update(picks)

    def predict(self, codes: torch.Tensor) -> torch.Tensor | None:
        model = self.model_level()
        return None if model is None or not self._fitted_on[model] else self.surrogate.predict(codes, model).mean(0)
