"""Bayesian optimisation with a (pretrained) deep-ensemble surrogate."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from nas.acquisition import ACQUISITION_NAMES, select_batch
from nas.errors import NASError
from nas.space import Encoding, SearchSpace
from nas.strategies.base import HIGH_FIDELITY, Strategy
from nas.surrogate.model import PRETRAINING_MODES, EnsembleSurrogate
from nas.zero_cost import ZeroCostData

SurrogateFactory = Callable[..., EnsembleSurrogate]


class SurrogateGuided:
    """What every strategy driven by a deep-ensemble surrogate shares: building and
    pretraining the surrogate, the candidates scored each iteration, and choosing a batch
    by acquisition.

    Mixed into a :class:`Strategy`; the strategy's ``__init__`` calls
    :meth:`_init_surrogate` after ``Strategy.__init__``.
    """

    space: SearchSpace
    generator: torch.Generator
    surrogate: EnsembleSurrogate
    pretraining: str
    acquisition: str
    pool_size: int

    def _init_surrogate(
        self,
        surrogate: SurrogateFactory | EnsembleSurrogate,
        seed: int,
        pretraining: str,
        acquisition: str,
        pool_size: int,
        **surrogate_options: Any,
    ) -> None:
        """Validate the settings and build the surrogate (``surrogate_options`` go to the factory)."""
        if acquisition not in ACQUISITION_NAMES:
            raise NASError(f"Unknown acquisition {acquisition!r}; valid acquisitions are {', '.join(ACQUISITION_NAMES)}.")
        if pretraining not in PRETRAINING_MODES:
            raise NASError(f"Unknown pretraining mode {pretraining!r}; valid modes are {', '.join(PRETRAINING_MODES)}.")
        space = self.space
        self.surrogate = surrogate if isinstance(surrogate, EnsembleSurrogate) else surrogate(space=space, seed=seed, pretraining=pretraining, **surrogate_options)
        self.pretraining = pretraining
        self.acquisition = acquisition
        self.pool_size = pool_size
        # Features of the whole space are fixed: compute them once, score them every iteration.
        self._all_features = space.features(space.all_codes) if space.enumerable else None

    @property
    def needs_zero_cost(self) -> bool:
        return self.pretraining != "none"

    def pretrain(self, data: ZeroCostData) -> None:
        """Pretrain the surrogate's trunk on zero-cost metrics (a no-op without pretraining)."""
        self.surrogate.pretrain(data)

    def _candidates(self, encodings: Sequence[Encoding], values: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes to score (``c x d``) and their precomputed features (``c x f``) when available.

        ``encodings`` and ``values`` are observations whose best points seed the mutation
        pool of spaces too large to enumerate.
        """
        if self._all_features is not None:
            return self.space.all_codes, self._all_features
        # Too large to enumerate: random members plus mutations of the best observations.
        pool = [self.space.sample(self.pool_size // 2, self.generator)]
        ranked = sorted(zip(values, encodings), key=lambda t: -t[0] if t[0] == t[0] else float("inf"))
        parents = [enc for _, enc in ranked[:20]]
        mutants = [self.space.mutate(self.space.mutate(p, self.generator), self.generator) for p in parents for _ in range(self.pool_size // 40)]
        if mutants:
            pool.append(torch.tensor(mutants, dtype=torch.long))
        return torch.unique(torch.cat(pool), dim=0), None

    def _select(
        self,
        n: int,
        codes: torch.Tensor,
        features: torch.Tensor | None,
        taken: set[Encoding],
        best: float,
        fidelity: str = HIGH_FIDELITY,
    ) -> list[Encoding]:
        """Up to ``n`` of the ``c x d`` candidate ``codes`` that maximise the acquisition
        on the ``fidelity`` head, none of them in ``taken``.

        Args:
            best: the incumbent, in objective units of ``fidelity`` (normalised here).
        """
        samples = self.surrogate.predict(codes, fidelity, features=features)
        keys = self.space.keys(codes)
        taken_keys = self.space.keys(torch.tensor(sorted(taken), dtype=torch.long)) if taken else keys.new_empty(0)
        excluded = torch.isin(keys, taken_keys)
        incumbent = float(self.surrogate.normalise(torch.tensor(best), fidelity))
        picks = select_batch(samples, incumbent, n, excluded, self.acquisition, self.generator)
        return [tuple(row) for row in codes[picks].tolist()]


class BayesianOptimization(SurrogateGuided, Strategy):
    """Mono-fidelity BO: fit the ensemble on all observations, maximise the acquisition
    over the whole enumerated space (or a sampled + mutated pool), return a batch.

    Args:
        space: the search space.
        surrogate: a factory ``(space=, seed=, pretraining=) -> EnsembleSurrogate``
            (the ``ensemble`` config group), or a ready surrogate.
        seed: randomness of the initial design, pools, Thompson sampling, and the
            surrogate's initialisation.
        pretraining: ``simultaneous``, ``sequential`` or ``none`` (see :meth:`pretrain`).
        acquisition: ``pi`` (thesis default), ``ei``, ``ucb`` or ``thompson``.
        batch_size: suggestions per iteration when ``ask`` is not given a number.
        initial_points: random points evaluated before the surrogate is first used.
        pool_size: candidates scored per iteration when the space cannot be enumerated.
    """

    def __init__(
        self,
        space: SearchSpace,
        surrogate: SurrogateFactory | EnsembleSurrogate,
        seed: int = 0,
        pretraining: str = "simultaneous",
        acquisition: str = "pi",
        batch_size: int = 32,
        initial_points: int = 10,
        pool_size: int = 20_000,
    ) -> None:
        super().__init__(space, seed)
        self._init_surrogate(surrogate, seed, pretraining, acquisition, pool_size)
        self.default_batch_size = batch_size
        self.initial_points = initial_points
        self._fitted_on = 0

    def _fit(self) -> None:
        if self._fitted_on == len(self.values):
            return
        codes = torch.tensor(self.encodings, dtype=torch.long)
        self.surrogate.fit(codes, self.observed_values())
        self._fitted_on = len(self.values)

    def ask(self, n: int | None = None) -> list[Encoding]:
        n = n or self.default_batch_size
        if len(self.values) < self.initial_points:
            return self._mark_pending(self.random_unseen(min(n, self.initial_points - len(self.values))))
        self._fit()
        codes, features = self._candidates(self.encodings, self.values)
        picks = self._select(n, codes, features, self.seen | self.pending, float(self.observed_values().max()))
        return self._mark_pending(picks)

    def predict(self, codes: torch.Tensor) -> torch.Tensor | None:
        if self._fitted_on == 0:
            return None
        return self.surrogate.predict(codes).mean(0)
