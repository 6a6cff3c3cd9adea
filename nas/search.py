"""The search loop shared by every strategy: propose, evaluate, observe, until the budget is spent.

With a :class:`~nas.store.Store` the loop is resumable: batches already in the store are
replayed (the strategy proposes them again and is told the stored results, which rebuilds
its state exactly), evaluations left running by a crash are run again, and only then do
new evaluations start.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from nas.errors import NASError
from nas.objectives.base import Evaluation, Objective
from nas.space import Encoding
from nas.store import Store, StoredEvaluation
from nas.strategies.base import HIGH_FIDELITY, Strategy, Trial

log = logging.getLogger(__name__)


@dataclass
class SearchHistory:
    """Every evaluation of a search, in order, with the time spent choosing and running them."""

    trials: list[Trial] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    ask_seconds: list[float] = field(default_factory=list)
    replayed: int = 0  # evaluations read back from the store instead of run

    @property
    def encodings(self) -> list[Encoding]:
        return [t.encoding for t in self.trials]

    @property
    def cost(self) -> float:
        return sum(e.cost for e in self.evaluations)

    def best_so_far(self) -> list[float]:
        """Best successful full-evaluation value after each evaluation (``-inf`` before the first)."""
        best, trace = float("-inf"), []
        for t, e in zip(self.trials, self.evaluations):
            if e.status == "ok" and t.fidelity == HIGH_FIDELITY and e.value > best:
                best = e.value
            trace.append(best)
        return trace

    def best(self) -> tuple[Trial, Evaluation] | None:
        """The best successful full evaluation."""
        scored = [(e.value, i) for i, (t, e) in enumerate(zip(self.trials, self.evaluations)) if e.status == "ok" and t.fidelity == HIGH_FIDELITY]
        if not scored:
            return None
        _, index = max(scored)
        return self.trials[index], self.evaluations[index]


def evaluate_safely(objective: Objective, trial: Trial) -> Evaluation:
    """Evaluate one trial; an unexpected exception becomes a failed evaluation with its reason.

    Configuration errors (:class:`NASError`) still stop the search: they would fail every
    candidate alike.
    """
    try:
        evaluation = objective.evaluate(trial.encoding, trial.fidelity)
    except NASError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken candidate must not end the search
        return Evaluation(value=math.nan, status="failed", error=f"{type(exc).__name__}: {exc}")
    if evaluation.status == "ok" and not math.isfinite(evaluation.value):
        return Evaluation(value=math.nan, cost=evaluation.cost, status="failed", metrics=evaluation.metrics, error="non-finite objective value")
    return evaluation


def run_search(
    strategy: Strategy,
    objective: Objective,
    budget: float,
    store: Store | None = None,
    on_evaluation: Callable[[SearchHistory], None] | None = None,
    on_batch: Callable[[SearchHistory], None] | None = None,
) -> SearchHistory:
    """Run ``strategy`` against ``objective`` until ``budget`` equivalent full evaluations are spent.

    Args:
        strategy: proposes trials and observes their evaluations.
        objective: evaluates a trial.
        budget: total cost, in equivalent full evaluations.
        store: where evaluations are recorded, and replayed from when resuming.
        on_evaluation: called after each new (not replayed) evaluation, which is then the
            last entry of the history, e.g. for logging.
        on_batch: called after every observed batch (reporting, checkpoints).
    """
    if not budget > 0:
        raise NASError(f"The budget must be a positive number of evaluations, got {budget}.")
    history = SearchHistory()
    stored_batches = store.num_batches() if store is not None else 0
    batch_index = 0
    while history.cost < budget:
        stored = store.batch(batch_index) if store is not None and batch_index < stored_batches else []
        remaining = max(1, int(round(budget - history.cost)))
        # Replaying asks for what was asked then, even if the budget has changed since.
        requested = stored[0].requested if stored else min(strategy.default_batch_size, remaining)
        started = time.perf_counter()
        proposed = strategy.propose(requested)
        history.ask_seconds.append(time.perf_counter() - started)
        batch = _reconcile(strategy, proposed, stored)
        if not batch:
            break  # the space is exhausted
        results = []
        for position, trial in enumerate(batch):
            record = stored[position] if position < len(stored) else None
            replayed = record is not None and record.evaluation is not None
            if replayed:
                evaluation, seconds = record.evaluation, record.seconds or 0.0
                history.replayed += 1
            else:
                row_id = store.start(batch_index, position, trial, strategy.space.to_string(trial.encoding), requested) if store is not None else -1
                begun = time.perf_counter()
                evaluation = evaluate_safely(objective, trial)
                seconds = time.perf_counter() - begun
                if store is not None:
                    store.finish(row_id, evaluation, seconds)
            results.append(evaluation)
            history.trials.append(trial)
            history.evaluations.append(evaluation)
            history.seconds.append(seconds)
            if on_evaluation is not None and not replayed:
                on_evaluation(history)
        strategy.observe(batch, results)
        batch_index += 1
        if on_batch is not None:
            on_batch(history)
    return history


def _reconcile(strategy: Strategy, proposed: list[Trial], stored: list[StoredEvaluation]) -> list[Trial]:
    """The trials of a batch: the stored ones when resuming, the proposed ones otherwise.

    A deterministic strategy re-proposes exactly what it proposed before the interruption.
    If it does not (e.g. a different number of threads changed floating-point sums), the
    store wins: evaluations already paid for are never discarded.
    """
    if not stored:
        return proposed
    recorded = [r.trial for r in stored]
    if recorded == proposed[: len(recorded)]:
        return proposed
    log.warning("the strategy proposed a different batch than the store holds; continuing with the stored batch")
    strategy.release(proposed)
    strategy.claim(recorded)
    return recorded + [t for t in proposed[len(recorded) :] if t not in recorded]
