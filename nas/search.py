"""The search loop shared by every strategy: ask, evaluate, tell, until the budget is spent."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from nas.errors import NASError
from nas.objectives.base import Evaluation, Objective
from nas.space import Encoding
from nas.strategies.base import Strategy


@dataclass
class SearchHistory:
    """Every evaluation of a search, in order, with the time spent choosing them."""

    encodings: list[Encoding] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    ask_seconds: list[float] = field(default_factory=list)

    @property
    def cost(self) -> float:
        return sum(e.cost for e in self.evaluations)

    def best_so_far(self) -> list[float]:
        """Best successful value after each evaluation (``-inf`` before the first success)."""
        best, trace = float("-inf"), []
        for e in self.evaluations:
            if e.status == "ok" and e.value > best:
                best = e.value
            trace.append(best)
        return trace


def run_search(
    strategy: Strategy,
    objective: Objective,
    budget: float,
    on_batch: Callable[[SearchHistory], None] | None = None,
) -> SearchHistory:
    """Run ``strategy`` against ``objective`` until ``budget`` equivalent full evaluations are spent.

    ``on_batch`` is called after every told batch (reporting, logging, checkpoints).
    """
    if not budget > 0:
        raise NASError(f"The budget must be a positive number of evaluations, got {budget}.")
    history = SearchHistory()
    while history.cost < budget:
        started = time.perf_counter()
        remaining = max(1, int(round(budget - history.cost)))
        batch = strategy.ask(min(strategy.default_batch_size, remaining))
        history.ask_seconds.append(time.perf_counter() - started)
        if not batch:
            break  # the space is exhausted
        results = [objective.evaluate(enc) for enc in batch]
        strategy.tell(batch, [r.value for r in results])
        history.encodings.extend(batch)
        history.evaluations.extend(results)
        if on_batch is not None:
            on_batch(history)
    return history
