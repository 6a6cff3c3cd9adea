"""Model-free baselines: random search, regularized evolution, local search."""
from __future__ import annotations

from collections import deque

import torch

from nas.space import Encoding, SearchSpace
from nas.strategies.base import Strategy


class RandomSearch(Strategy):
    """Uniform sampling without replacement.

    Suggestions are drawn one at a time, so that their sequence does not depend on how many
    each ask requests (an asynchronous search asks as workers free up).
    """

    def ask(self, n: int | None = None) -> list[Encoding]:
        picks: list[Encoding] = []
        for _ in range(n or self.default_batch_size):
            drawn = self._mark_pending(self.random_unseen(1))
            if not drawn:
                break  # the space is exhausted
            picks += drawn
        return picks


class RegularizedEvolution(Strategy):
    """Aging evolution (Real et al., 2019): tournament selection, single-variable mutation,
    the oldest member leaves the population when a child joins.

    Args:
        population_size: members kept alive.
        tournament_size: members sampled per tournament; the best becomes the parent.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, population_size: int = 30, tournament_size: int = 10) -> None:
        super().__init__(space, seed)
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.population: deque[tuple[Encoding, float]] = deque(maxlen=population_size)

    def tell(self, encodings, values) -> None:  # type: ignore[no-untyped-def]
        super().tell(encodings, values)
        floor = float(self.observed_values().min()) if self.values else 0.0
        for enc, value in zip(encodings, values):
            self.population.append((tuple(enc), floor if value != value else float(value)))

    def ask(self, n: int | None = None) -> list[Encoding]:
        n = n or self.default_batch_size
        if len(self.population) < self.population_size:
            return self._mark_pending(self.random_unseen(n))
        children: list[Encoding] = []
        taken = self.seen | self.pending
        members = list(self.population)
        for _ in range(n):
            for _attempt in range(50):
                picks = torch.randperm(len(members), generator=self.generator)[: self.tournament_size].tolist()
                parent = max((members[i] for i in picks), key=lambda m: m[1])[0]
                child = self.space.mutate(parent, self.generator)
                if child not in taken:
                    break
            else:
                child = self.random_unseen(1)[0]
            taken.add(child)
            children.append(child)
        return self._mark_pending(children)


class LocalSearch(Strategy):
    """Best-improvement hill climbing over single-variable neighbourhoods with random restarts
    (White et al., 2021).

    A phase is a set of points whose values are needed before deciding the next move: a
    restart (``initial_points`` random points, then climb from the best) or a neighbourhood
    (all single-variable changes of the current point, asked in random order; then move to
    the best neighbour if it improves, else restart).
    """

    def __init__(self, space: SearchSpace, seed: int = 0, initial_points: int = 10) -> None:
        super().__init__(space, seed)
        self.initial_points = initial_points
        self.current: tuple[Encoding, float] | None = None
        self.phase: list[Encoding] = []
        self.queue: list[Encoding] = []
        self.value_of: dict[Encoding, float] = {}

    def tell(self, encodings, values) -> None:  # type: ignore[no-untyped-def]
        super().tell(encodings, values)
        for enc, value in zip(encodings, values):
            self.value_of[tuple(enc)] = float("-inf") if value != value else float(value)

    def _next_phase(self) -> None:
        """Decide the next phase once every point of the current one is known."""
        best = max(self.phase, key=lambda e: self.value_of[e], default=None)
        if best is not None and (self.current is None or self.value_of[best] > self.current[1]):
            self.current = (best, self.value_of[best])
            neighbours = [tuple(r) for r in self.space.neighbours(best).tolist()]
            order = torch.randperm(len(neighbours), generator=self.generator).tolist()
            self.phase = [neighbours[i] for i in order]
            self.queue = [e for e in self.phase if e not in self.seen]
        else:  # local optimum (or start): restart from fresh random points
            self.current = None
            self.phase = self.random_unseen(self.initial_points)
            self.queue = list(self.phase)

    def ask(self, n: int | None = None) -> list[Encoding]:
        n = n or self.default_batch_size
        out: list[Encoding] = []
        for _ in range(1000):  # bounded: each pass either fills ``out`` or starts a new phase
            while self.queue and len(out) < n:
                enc = self.queue.pop(0)
                if enc not in self.seen and enc not in self.pending:
                    out.append(enc)
            if len(out) == n or any(e not in self.value_of for e in self.phase):
                break
            self._next_phase()
            if not self.phase:
                break  # the space is exhausted
        return self._mark_pending(out)
