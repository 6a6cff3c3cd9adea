"""An objective that also reports the costs a search's goals read, from cost tables or
measured before training, and refuses candidates over a budget before training them."""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from nas.errors import NASError
from nas.fidelity import HIGH_FIDELITY
from nas.acquisition.goals import Goals
from nas.objectives.base import Evaluation, Objective
from nas.costs.measured import MeasuredCosts
from nas.space import Encoding, SearchSpace
from nas.trial import StopRule, Trial, evaluate_trial

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
        columns: cost columns of the space's cost tables (FLOPs, parameters, a device's
            latency), name -> ``N`` values over ``space.all_codes`` (see
            :func:`nas.costs.columns.load_columns`).
        measured: costs measured on each candidate's fused network before it is trained
            (for goal columns no table holds).

    A candidate whose costs (from the tables or measured) break a budget is not trained:
    its evaluation fails at no cost, with the costs in its metrics, so that a strategy
    still learns where the budget lies.
    """

    def __init__(self, objective: Objective, space: SearchSpace, goals: Goals, columns: Mapping[str, torch.Tensor], measured: MeasuredCosts | None = None) -> None:
        self.objective = objective
        self.space = space
        self.goals = goals
        self.value_name = goals.objectives[0].name
        own = {VALUE_NAME, str(getattr(objective, "column", VALUE_NAME))}
        if self.value_name not in own:
            raise NASError(f"The first objective is the searched value, named {' or '.join(sorted(own))}; got {self.value_name!r}.")
        self.columns = dict(columns)
        self.measured = measured
        goals.validate([self.value_name, *self.columns, *(measured.columns if measured else ())], "the search, with its cost tables,")

    def __getattr__(self, name: str) -> object:
        if name == "objective":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.objective, name)  # dataset, trainer, fidelity, ... of the wrapped objective

    def costs(self, encoding: Encoding) -> dict[str, float]:
        """The goal columns of one architecture known without training: table values
        (``NaN`` if missing), then measured costs."""
        index = int(self.space.index_of(torch.tensor([encoding], dtype=torch.long))[0]) if self.columns else -1
        out = {name: float(column[index]) if index >= 0 else math.nan for name, column in self.columns.items() if name in self.goals.columns}
        if self.measured is not None:
            out.update(self.measured(encoding))
        return out

    def over_budget(self, encoding: Encoding) -> tuple[dict[str, float], str | None]:
        """The costs of one architecture known before training, and why it breaks a budget
        (``"flops_m 20.1; budget flops_m<=16"``), or ``None`` when it meets them all."""
        costs = self.costs(encoding)
        # A cost no table holds (NaN) is unknown, not over budget: such a candidate is trained.
        broken = [str(c) for c in self.goals.constraints if not math.isnan(costs.get(c.name, math.nan)) and not bool(c.satisfied(torch.tensor([costs[c.name]], dtype=torch.float64))[0])]
        if not broken:
            return costs, None
        measured = ", ".join(f"{name} {costs[name]:.4g}" for name in dict.fromkeys(c.name for c in self.goals.constraints if c.name in costs))
        return costs, f"{measured}; budget {', '.join(broken)}"

    @property
    def reports_epochs(self) -> bool:
        return bool(getattr(self.objective, "reports_epochs", False))

    def evaluate(self, encoding: Encoding, fidelity: str = HIGH_FIDELITY, stop_rule: StopRule | None = None) -> Evaluation:
        costs, breach = self.over_budget(encoding)
        if breach is not None:
            return Evaluation(value=math.nan, cost=0.0, status="failed", metrics=costs, error=f"over budget before training ({breach})")
        evaluation = evaluate_trial(self.objective, Trial(encoding, fidelity, stop_rule))
        metrics = {**evaluation.metrics, **costs, self.value_name: evaluation.value}
        return Evaluation(value=evaluation.value, cost=evaluation.cost, status=evaluation.status, metrics=metrics, error=evaluation.error)
