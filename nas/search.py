"""The search loop shared by every strategy: propose, evaluate, observe, until the budget is spent.

With a :class:`~nas.store.Store` the loop is resumable: batches already in the store are
replayed (the strategy proposes them again and is told the stored results, which rebuilds
its state exactly), evaluations left running by a crash are run again, and only then do
new evaluations start.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from nas.errors import NASError
from nas.executors import Executor, LocalExecutor
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


def run_search(
    strategy: Strategy,
    objective: Objective,
    budget: float,
    store: Store | None = None,
    on_evaluation: Callable[[SearchHistory], None] | None = None,
    on_batch: Callable[[SearchHistory], None] | None = None,
    executor: Executor | None = None,
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
        executor: runs the evaluations of a batch (in this process by default). Each batch
            asks for at least ``executor.parallelism`` trials, so that none of it idles.
    """
    if not budget > 0:
        raise NASError(f"The budget must be a positive number of evaluations, got {budget}.")
    executor = executor or LocalExecutor()
    history = SearchHistory()
    stored_batches = store.num_batches() if store is not None else 0
    batch_index = 0
    while history.cost < budget:
        stored = store.batch(batch_index) if store is not None and batch_index < stored_batches else []
        remaining = max(1, int(round(budget - history.cost)))
        # Replaying asks for what was asked then, even if the budget has changed since.
        requested = stored[0].requested if stored else min(max(strategy.default_batch_size, executor.parallelism), remaining)
        started = time.perf_counter()
        proposed = strategy.propose(requested)
        history.ask_seconds.append(time.perf_counter() - started)
        batch = _reconcile(strategy, proposed, stored)
        if not batch:
            break  # the space is exhausted
        results = _evaluate_batch(batch_index, batch, stored, requested, strategy, objective, executor, store, history, on_evaluation)
        strategy.observe(batch, results)
        batch_index += 1
        if on_batch is not None:
            on_batch(history)
    return history


def _evaluate_batch(
    batch_index: int,
    batch: list[Trial],
    stored: list[StoredEvaluation],
    requested: int,
    strategy: Strategy,
    objective: Objective,
    executor: Executor,
    store: Store | None,
    history: SearchHistory,
    on_evaluation: Callable[[SearchHistory], None] | None,
) -> list[Evaluation]:
    """Evaluate the batch's trials the store does not hold, and extend the history in batch order.

    Each result is stored the moment it finishes, whatever its position; the history (and
    ``on_evaluation``) follows the batch's order, so that logs, reports and a resumed run
    see the same sequence.
    """
    done: dict[int, tuple[Evaluation, float, bool]] = {}  # position -> (evaluation, seconds, replayed)
    for position, record in enumerate(stored[: len(batch)]):
        if record.evaluation is not None:
            done[position] = (record.evaluation, record.seconds or 0.0, True)
            history.replayed += 1
    to_run = [position for position in range(len(batch)) if position not in done]
    rows = {
        position: store.start(batch_index, position, batch[position], strategy.space.to_string(batch[position].encoding), requested) if store is not None else -1
        for position in to_run
    }
    next_in_order = 0

    def extend_history() -> None:
        nonlocal next_in_order
        while next_in_order in done:
            evaluation, seconds, replayed = done[next_in_order]
            history.trials.append(batch[next_in_order])
            history.evaluations.append(evaluation)
            history.seconds.append(seconds)
            if on_evaluation is not None and not replayed:
                on_evaluation(history)
            next_in_order += 1

    extend_history()
    for index, evaluation, seconds in executor.run(objective, [batch[p] for p in to_run]):
        position = to_run[index]
        if store is not None:
            store.finish(rows[position], evaluation, seconds)
        done[position] = (evaluation, seconds, False)
        extend_history()
    return [done[position][0] for position in range(len(batch))]


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
