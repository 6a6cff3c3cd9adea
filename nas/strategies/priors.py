"""Priors: known architectures evaluated first, and optionally their neighbourhood next.

A user who already has good candidates (the space's hand-designed reference, last year's
winner) names them as ``initial=[arch, ...]``, as Optuna's ``enqueue_trial`` or NePS'
priors do. :class:`PriorsFirst` wraps any strategy: its first suggestions are the priors,
in the order given, then ``neighbours`` single-variable mutations of them (sampling near
the prior, which shapes what the surrogate learns first), then whatever the wrapped
strategy suggests. The wrapped strategy is told every result, priors included, so a
model-based strategy starts from them (BO counts them among its initial points).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from nas.errors import NASError
from nas.space import Encoding, SearchSpace
from nas.strategies.base import Strategy, Trial

#: Where a suggestion of :class:`PriorsFirst` came from.
PRIOR, NEAR_PRIOR = "prior", "near a prior"


def parse_priors(space: SearchSpace, texts: Sequence[str] | None) -> list[Encoding]:
    """The encodings of ``texts`` (architecture strings of ``space``), each a member and given once;
    a :class:`NASError` names the first that is not."""
    priors: list[Encoding] = []
    for text in texts or []:
        try:
            encoding = space.validate(space.parse(str(text)))
        except NASError as error:
            raise NASError(f"The prior {text!r} in initial is not a member of search space {space.name!r}: {error}") from None
        if encoding in priors:
            raise NASError(f"The prior {space.to_string(encoding)!r} is given twice in initial; give each architecture once.")
        priors.append(encoding)
    return priors


class PriorsFirst:
    """``strategy`` whose first suggestions are ``priors``, then ``neighbours`` mutations of them.

    Everything else (observations, the surrogate, ``predict``) is the wrapped strategy's:
    attributes are read from it.

    Args:
        strategy: the strategy that suggests once the priors are out.
        priors: architectures to evaluate first (full evaluations), in order.
        neighbours: single-variable mutations of the priors to evaluate next, drawn in turn
            around each prior with a generator of the strategy's seed; 0 for none.
    """

    def __init__(self, strategy: Strategy, priors: Sequence[Encoding], neighbours: int = 0) -> None:
        if neighbours < 0:
            raise NASError(f"initial_neighbours is a number of architectures, 0 or more, got {neighbours}.")
        if neighbours and not priors:
            raise NASError("initial_neighbours samples near the priors: name them in initial=[...] too.")
        self.strategy = strategy
        self.priors = [tuple(p) for p in priors]
        self.neighbours = neighbours
        self.origin: dict[Encoding, str] = {}  # suggestion -> PRIOR or NEAR_PRIOR
        self._next_prior = 0
        self._drawn_neighbours = 0
        self._generator = torch.Generator().manual_seed(strategy.seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.strategy, name)

    def _taken(self, encoding: Encoding, chosen: list[Trial]) -> bool:
        keys = self.strategy.identity_keys(torch.tensor([encoding, *(t.encoding for t in chosen)], dtype=torch.long))
        taken = self.strategy.seen | self.strategy.pending
        if bool((keys[1:] == keys[0]).any()) or encoding in taken:
            return True
        if not self.strategy.skip_twins or not taken:
            return False
        return bool(torch.isin(keys[:1], self.strategy.identity_keys(torch.tensor(sorted(taken), dtype=torch.long))).item())

    def _near_prior(self, chosen: list[Trial]) -> Encoding | None:
        """The next mutation of a prior not taken yet (``None`` after a bounded number of tries)."""
        for _ in range(50):
            prior = self.priors[self._drawn_neighbours % len(self.priors)]
            candidate = self.strategy.space.mutate(prior, self._generator)
            if not self._taken(candidate, chosen):
                return candidate
        return None

    def propose(self, n: int | None = None) -> list[Trial]:
        n = n or self.strategy.default_batch_size
        chosen: list[Trial] = []
        while len(chosen) < n and self._next_prior < len(self.priors):
            prior = self.priors[self._next_prior]
            self._next_prior += 1
            if not self._taken(prior, chosen):
                chosen.append(Trial(prior))
                self.origin[prior] = PRIOR
        while len(chosen) < n and self._drawn_neighbours < self.neighbours:
            candidate = self._near_prior(chosen)
            self._drawn_neighbours += 1
            if candidate is not None:
                chosen.append(Trial(candidate))
                self.origin[candidate] = NEAR_PRIOR
        if chosen:
            self.strategy.claim(chosen)
        if len(chosen) < n:
            chosen += self.strategy.propose(n - len(chosen))
        return chosen


def prior_origin(strategy: Any, encoding: Encoding) -> str | None:
    """:data:`PRIOR` or :data:`NEAR_PRIOR` when ``strategy`` (a :class:`PriorsFirst`) suggested
    ``encoding`` as such, else ``None`` (the search found it)."""
    return strategy.origin.get(tuple(encoding)) if isinstance(strategy, PriorsFirst) else None
