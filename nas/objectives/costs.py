"""An objective that also reports the costs a search's goals read, from cost tables."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from nas.columns import load_columns
from nas.errors import NASError
from nas.fidelity import HIGH_FIDELITY
from nas.goals import Goals
from nas.objectives.base import Evaluation, Objective
from nas.space import Encoding, SearchSpace

#: The name goals use for the wrapped objective's own value.
VALUE_NAME = "accuracy"


class CostAwareObjective:
    """Wraps an objective: every evaluation's ``metrics`` also hold each goal column, the
    objective's value under its goal name and the costs read from ``tables``.

    Args:
        objective: the wrapped objective (a table look-up or real training).
        space: the search space (enumerable: cost tables cover its members).
        goals: the search's goals; the first objective is the wrapped objective's value,
            named ``accuracy`` or after the objective's column.
        tables: CSV tables with an ``arch`` column and cost columns (FLOPs, parameters, a
            device's latency), joined on ``arch``.
    """

    def __init__(self, objective: Objective, space: SearchSpace, goals: Goals, tables: Sequence[str | Path]) -> None:
        self.objective = objective
        self.space = space
        self.goals = goals
        self.value_name = goals.objectives[0].name
        own = {VALUE_NAME, str(getattr(objective, "column", VALUE_NAME))}
        if self.value_name not in own:
            raise NASError(f"The first objective is the searched value, named {' or '.join(sorted(own))}; got {self.value_name!r}.")
        self.columns = load_columns(space, tables) if tables else {}
        goals.validate([self.value_name, *self.columns], "the search, with its cost tables,")

    def __getattr__(self, name: str) -> object:
        if name == "objective":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.objective, name)  # dataset, trainer, fidelity, ... of the wrapped objective

    def costs(self, encoding: Encoding) -> dict[str, float]:
        """The table values of the goal columns of one architecture (``NaN`` if missing)."""
        index = int(self.space.index_of(torch.tensor([encoding], dtype=torch.long))[0])
        return {name: float(column[index]) if index >= 0 else math.nan for name, column in self.columns.items() if name in self.goals.columns}

    def evaluate(self, encoding: Encoding, fidelity: str = HIGH_FIDELITY) -> Evaluation:
        evaluation = self.objective.evaluate(encoding, fidelity)
        metrics = {**evaluation.metrics, **self.costs(encoding), self.value_name: evaluation.value}
        return Evaluation(value=evaluation.value, cost=evaluation.cost, status=evaluation.status, metrics=metrics, error=evaluation.error)
