"""The search loop shared by every strategy: propose, evaluate, observe, until the budget is spent.

Two schedules, chosen by the executor (``executor.asynchronous``):

- *asynchronous* (process, Ray and Slurm executors by default): each time a worker frees
  up, the strategy is asked for one suggestion per free worker, and told each result the
  moment it arrives. The trials still running are the strategy's ``pending`` set, which it
  never suggests again (model-based strategies state how they treat them while choosing).
  No worker waits for the slowest evaluation of a batch.
- *batches* (the local executor by default): the strategy is asked for its own batch
  (at least one trial per worker), which is told whole, in the proposed order, once all
  of it has finished.

Every result is stored the moment it arrives. With a :class:`~nas.store.Store` the loop is
resumable: the store records the order of asks and tells, and resuming replays them in
that order (the strategy proposes the stored suggestions again and is told the stored
results at the same points), which rebuilds its state exactly; evaluations left running
by a crash are run again, and only then do new suggestions start.

With ``reuse_twins`` (what a training search does), a trial whose network is a *twin* of
one already evaluated at the same fidelity (equal :meth:`~nas.space.SearchSpace.function_keys`:
the same function with the same parameters, e.g. NAS-Bench-201 cells that differ only on
edges that never reach the output) is never trained: it gets that evaluation's result at
no cost (``metrics["twin_of"]`` names the evaluation), as soon as it is known; a twin of
one still running waits for it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Hashable

import torch

from nas.errors import NASError
from nas.executors import Arrival, Executor, LocalExecutor, Pool
from nas.fidelity import HIGH_FIDELITY
from nas.objectives.base import Evaluation, Objective
from nas.space import Encoding
from nas.store import Store, StoredAsk, StoredEvaluation
from nas.strategies.base import Strategy, Trial

log = logging.getLogger(__name__)

#: Evaluations that cost nothing (candidates refused before training, e.g. over a
#: measured budget) allowed per unit of budget, plus a floor: past it the search stops, as
#: the budget is then likely one the strategy cannot learn to meet.
FREE_EVALUATIONS_PER_BUDGET = 20
FREE_EVALUATIONS_FLOOR = 50
#: The metric that marks an evaluation copied from its twin's: the index, in the search's
#: history, of the evaluation whose network it shares.
TWIN_OF = "twin_of"


@dataclass
class SearchHistory:
    """Every evaluation of a search, in the order they finished, with the time spent choosing and running them."""

    trials: list[Trial] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    ask_seconds: list[float] = field(default_factory=list)
    replayed: int = 0  # evaluations read back from the store instead of run
    retried: int = 0  # evaluations run again because their worker died

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
        """The best successful full evaluation (the earliest of equal ones)."""
        scored = [(e.value, -i) for i, (t, e) in enumerate(zip(self.trials, self.evaluations)) if e.status == "ok" and t.fidelity == HIGH_FIDELITY]
        if not scored:
            return None
        index = -max(scored)[1]  # the first of equals: a twin's copy never wins over the network trained
        return self.trials[index], self.evaluations[index]


def run_search(
    strategy: Strategy,
    objective: Objective,
    budget: float,
    store: Store | None = None,
    on_evaluation: Callable[[SearchHistory], None] | None = None,
    on_batch: Callable[[SearchHistory], None] | None = None,
    executor: Executor | None = None,
    reuse_twins: bool = False,
) -> SearchHistory:
    """Run ``strategy`` against ``objective`` until ``budget`` equivalent full evaluations are spent.

    Args:
        strategy: proposes trials and observes their evaluations.
        objective: evaluates a trial.
        budget: total cost, in equivalent full evaluations. Trials running count as one
            each, so that an asynchronous search does not start more than the budget holds.
        store: where evaluations are recorded, and replayed from when resuming.
        on_evaluation: called after each new (not replayed) evaluation, which is then the
            last entry of the history, e.g. for logging.
        on_batch: called after every ``observe`` of the strategy (a whole batch, or one
            evaluation of an asynchronous search), e.g. for reporting or checkpoints.
        executor: runs the evaluations (in this process by default) and chooses the
            schedule (see the module doc).
        reuse_twins: give a trial whose network is a twin of one evaluated (or running) at
            the same fidelity that evaluation's result at no cost instead of running it (see
            the module doc). For objectives whose value is a function of the network alone up
            to training noise (training), not for tables that list twins with their own values.
    """
    if not budget > 0:
        raise NASError(f"The budget must be a positive number of evaluations, got {budget}.")
    check_fidelities(strategy, objective)
    check_pruning(strategy, objective)
    search = _Search(strategy, objective, budget, store, on_evaluation, on_batch, executor or LocalExecutor(), reuse_twins)
    return search.run()


def check_fidelities(strategy: Strategy, objective: Objective) -> None:
    """Refuse, before any work, a multi-fidelity strategy whose fidelities the objective lacks
    (objectives that say what a fidelity costs, ``planned_cost``, are asked for each)."""
    levels = getattr(strategy, "levels", ())
    cost_of = getattr(objective, "planned_cost", None)
    if cost_of is None:
        return
    for level in levels:
        try:
            cost_of(level)
        except NASError as error:
            raise NASError(f"{type(strategy).__name__} evaluates at the fidelities {', '.join(levels)}, which this objective does not offer: {error}") from None


def check_pruning(strategy: Strategy, objective: Objective) -> None:
    """Refuse, before any work, a pruning rule (or BO's ``halving`` initial design, which
    screens its draws with one) with an objective that reports no epochs (a table), or one
    that could never stop a run of the objective's epochs."""
    rules = {
        ("Pruning", "pruning=none"): getattr(strategy, "pruning", None),
        ("The halving initial design", "strategy.initial_design=random"): getattr(strategy, "design_rule", None),
    }
    for (what, fix), rule in rules.items():
        if rule is None:
            continue
        if not getattr(objective, "reports_epochs", False):
            raise NASError(
                f"{what} stops training runs between epochs, but this objective ({type(objective).__name__}) reports no epochs; "
                f"use {fix}, or an objective that trains (objective=training)."
            )
        schedule = getattr(objective, "fidelity", None)
        if schedule is not None:
            rule.check(schedule.hi_epochs)


@dataclass(eq=False)
class _Slot:
    """One suggested trial, from its ask to its tell."""

    batch: int
    position: int
    trial: Trial
    row: int | None  # its row in the store
    evaluation: Evaluation | None = None
    seconds: float = 0.0
    rerun: bool = False  # it ran before (an interrupted search): the store counts the attempt
    told: bool = False
    twin_key: tuple[str, int] | None = None  # (fidelity, function key) when twins are reused


class _Search:
    """The state of one run of :func:`run_search`."""

    def __init__(
        self,
        strategy: Strategy,
        objective: Objective,
        budget: float,
        store: Store | None,
        on_evaluation: Callable[[SearchHistory], None] | None,
        on_batch: Callable[[SearchHistory], None] | None,
        executor: Executor,
        reuse_twins: bool = False,
    ) -> None:
        self.strategy, self.objective, self.budget, self.store = strategy, objective, budget, store
        self.reuse_twins = reuse_twins
        self.evaluated_twins: dict[tuple[str, int], int] = {}  # (fidelity, function key) -> history index
        self.running_twins: set[tuple[str, int]] = set()  # (fidelity, function key) of running slots
        self.parked: dict[tuple[str, int], list[_Slot]] = {}  # twins waiting for a running evaluation
        self.on_evaluation, self.on_batch, self.executor = on_evaluation, on_batch, executor
        self.asynchronous = executor.asynchronous
        self.history = SearchHistory()
        self.batches: list[list[_Slot]] = []  # every ask's slots, by batch index
        self.queue: list[_Slot] = []  # suggested, not submitted yet
        self.running: dict[int, _Slot] = {}  # pool key -> slot
        self.tells = 0  # observe calls so far
        self.arrivals = 0  # evaluations finished so far
        self.waiting_for_results = False  # the strategy had nothing to suggest until it learns more
        self.exhausted = False

    # ------------------------------------------------------------------ the loop
    def run(self) -> SearchHistory:
        if self.store is not None:
            self._replay(self.store)
        with self.executor.pool(self.objective, on_retry=self._retry) as pool:
            while True:
                self._submit(pool)
                if self._should_ask(pool):
                    self._ask(self._ask_size(pool))
                    continue
                if not pool.busy:
                    break
                for arrival in pool.wait():
                    self._arrive(arrival)
        return self.history

    def _outstanding(self) -> int:
        """Suggestions not finished yet (queued, running, or waiting for a running twin)."""
        return len(self.queue) + len(self.running) + sum(map(len, self.parked.values()))

    def _capacity(self) -> int:
        """How many more trials the budget holds, counting each unfinished one as a full evaluation."""
        remaining = self.budget - self.history.cost
        if not remaining > 0:
            return 0
        return max(1, int(round(remaining))) - self._outstanding()

    def _should_ask(self, pool: Pool) -> bool:
        if self.exhausted or self.queue or self._capacity() < 1:
            return False
        free = sum(e.cost == 0 for e in self.history.evaluations)
        if free >= FREE_EVALUATIONS_FLOOR + FREE_EVALUATIONS_PER_BUDGET * self.budget:
            log.warning("stopping: %d candidates were refused before training (they cost nothing); the budgets may be too tight for this space", free)
            self.exhausted = True
            return False
        if self.asynchronous:
            return pool.free > 0 and not self.waiting_for_results
        return not self.running  # the barrier: every batch so far is finished and told

    def _ask_size(self, pool: Pool) -> int:
        if self.asynchronous:
            return min(pool.free, self._capacity())
        return min(max(self.strategy.default_batch_size, pool.parallelism), self._capacity())

    def _ask(self, requested: int) -> None:
        started = time.perf_counter()
        proposed = self.strategy.propose(requested)
        self.history.ask_seconds.append(time.perf_counter() - started)
        batch = len(self.batches)
        rows: list[int | None] = [None] * len(proposed)
        if self.store is not None:
            architectures = [self.strategy.space.to_string(t.encoding) for t in proposed]
            rows = list(self.store.ask(batch, requested, self.tells, proposed, architectures))
        slots = [_Slot(batch, position, trial, row, twin_key=self._twin_key(trial)) for position, (trial, row) in enumerate(zip(proposed, rows))]
        self.batches.append(slots)
        self.queue.extend(slots)
        if not proposed:
            # Nothing to suggest: the space is exhausted, or the strategy waits for results.
            self.exhausted = not self.asynchronous or not self._outstanding()
            self.waiting_for_results = True

    def _twin_key(self, trial: Trial) -> tuple[str, int] | None:
        """What identifies ``trial``'s network at its fidelity (``None``: twins are not reused)."""
        if not self.reuse_twins:
            return None
        codes = torch.tensor([trial.encoding], dtype=torch.long)
        return trial.fidelity, int(self.strategy.space.function_keys(codes)[0])

    def _submit(self, pool: Pool) -> None:
        while self.queue:
            twin = self.queue[0].twin_key
            if twin is not None and twin in self.evaluated_twins:
                self._arrive_as_twin(self.queue.pop(0), self.evaluated_twins[twin])
                continue
            if twin is not None and twin in self.running_twins:
                self.parked.setdefault(twin, []).append(self.queue.pop(0))
                continue
            if pool.free < 1:
                break
            slot = self.queue.pop(0)
            if slot.rerun and self.store is not None and slot.row is not None:
                self.store.restart(slot.row)
            key = id(slot)
            self.running[key] = slot
            if twin is not None:
                self.running_twins.add(twin)
            # The trial runs with the strategy's stop rule as it stands now (a snapshot: the
            # store keeps the trial without it, and a replay rebuilds the same rule).
            pool.submit(key, replace(slot.trial, stop_rule=self.strategy.stop_rule(slot.trial)))

    def _arrive_as_twin(self, slot: _Slot, source: int) -> None:
        """Finish ``slot`` with the result of evaluation ``source`` of the history, its twin's."""
        evaluation = self.history.evaluations[source]
        log.info("%s is a twin of evaluation %d (the same network): its result is reused, nothing is trained",
                 self.strategy.space.to_string(slot.trial.encoding), source)
        copied = replace(evaluation, cost=0.0, metrics={**evaluation.metrics, TWIN_OF: float(source)})
        self._arrive(Arrival(id(slot), copied, 0.0, 0), slot)

    def _retry(self, key: Hashable, reason: str) -> None:
        slot = self.running[key]  # type: ignore[index]
        self.history.retried += 1
        if self.store is not None and slot.row is not None:
            self.store.restart(slot.row)

    def _arrive(self, arrival: Arrival, twin_slot: _Slot | None = None) -> None:
        slot = twin_slot if twin_slot is not None else self.running.pop(arrival.key)  # type: ignore[arg-type]
        slot.evaluation, slot.seconds = arrival.evaluation, arrival.seconds
        tell_now = self.asynchronous
        if self.store is not None and slot.row is not None:
            # In one transaction with the tell it implies, so that a resumed search tells it too.
            self.store.finish(slot.row, arrival.evaluation, arrival.seconds, self.arrivals, self.tells if tell_now else None)
        self.arrivals += 1
        self._extend_history(slot)
        if self.on_evaluation is not None:
            self.on_evaluation(self.history)
        if tell_now:
            self._tell([slot])
        else:
            self._tell_batch_if_complete(slot.batch)
        twin = slot.twin_key
        if twin is not None and twin_slot is None:
            self.running_twins.discard(twin)
            for waiting in self.parked.pop(twin, []):
                self._arrive_as_twin(waiting, self.evaluated_twins[twin])

    def _tell_batch_if_complete(self, batch: int) -> None:
        slots = self.batches[batch]
        if any(slot.evaluation is None for slot in slots) or all(slot.told for slot in slots):
            return
        if self.store is not None:
            self.store.tell([slot.row for slot in slots if slot.row is not None], self.tells)
        self._tell(slots)

    def _tell(self, slots: list[_Slot]) -> None:
        trials, evaluations = [slot.trial for slot in slots], [slot.evaluation for slot in slots]
        self.strategy.observe(trials, evaluations)  # type: ignore[arg-type]
        if (rule := getattr(self.strategy, "pruning", None)) is not None:
            rule.observe(trials, evaluations)
        for slot in slots:
            slot.told = True
        self.tells += 1
        self.waiting_for_results = False
        if self.on_batch is not None:
            self.on_batch(self.history)

    def _extend_history(self, slot: _Slot) -> None:
        assert slot.evaluation is not None
        if slot.twin_key is not None:
            self.evaluated_twins.setdefault(slot.twin_key, len(self.history.evaluations))
        self.history.trials.append(slot.trial)
        self.history.evaluations.append(slot.evaluation)
        self.history.seconds.append(slot.seconds)

    # ------------------------------------------------------------------ resuming
    def _replay(self, store: Store) -> None:
        """Replay the stored asks and tells in their recorded order; queue what was left running."""
        rows = store.rows()
        restore = getattr(self.objective, "restore", None)
        if restore is not None:
            # An objective that continues runs must know how far the stored ones went.
            for row in rows:
                if row.evaluation is not None and row.evaluation.status == "ok":
                    restore(row.trial.encoding, row.trial.fidelity, row.evaluation)
        by_batch: dict[int, list[StoredEvaluation]] = {}
        for row in rows:
            by_batch.setdefault(row.batch, []).append(row)
        groups: dict[int, list[int]] = {}  # tell index -> row ids, in batch order
        for row in rows:
            if row.told is not None:
                groups.setdefault(row.told, []).append(row.id)
        finished = sorted((r for r in rows if r.evaluation is not None), key=lambda r: (r.arrival is None, r.arrival, r.batch, r.position))
        arrival_order = {r.id: order for order, r in enumerate(finished)}
        slot_of: dict[int, _Slot] = {}
        in_history = 0

        def tell_stored_until(tells: int) -> None:
            nonlocal in_history
            while self.tells < tells:
                if self.tells not in groups:
                    raise NASError(f"The store {store.path} is inconsistent (tell {self.tells} is missing); move it away to start a new search.")
                slots = [slot_of[row_id] for row_id in groups[self.tells]]
                # The history holds, in arrival order, what had finished by this tell.
                last = max(arrival_order[row_id] for row_id in groups[self.tells])
                while in_history <= last:
                    self._extend_history(slot_of[finished[in_history].id])
                    in_history += 1
                self._tell(slots)

        for ask in store.asks():
            tell_stored_until(ask.asked_after)
            for slot in self._replay_ask(ask, by_batch.get(ask.batch, [])):
                slot_of[slot.row] = slot  # type: ignore[index]
        tell_stored_until(max(groups, default=-1) + 1)
        for record in finished[in_history:]:  # finished, waiting for the rest of their batch
            self._extend_history(slot_of[record.id])
        self.history.replayed = self.arrivals = len(finished)
        self.queue = [slot for slots in self.batches for slot in slots if slot.evaluation is None]
        for slot in self.queue:
            slot.rerun = True
        if self.queue:
            log.info("resuming: %d evaluations left running by the interrupted search run again", len(self.queue))
        for batch in range(len(self.batches)):
            if self.asynchronous:
                untold = [slot for slot in self.batches[batch] if slot.evaluation is not None and not slot.told]
                if untold:
                    self.store.tell([slot.row for slot in untold], self.tells)  # type: ignore[union-attr, misc]
                    self._tell(untold)
            else:
                self._tell_batch_if_complete(batch)

    def _replay_ask(self, ask: StoredAsk, records: list[StoredEvaluation]) -> list[_Slot]:
        """Ask the strategy again as the stored ask did; the stored suggestions win."""
        started = time.perf_counter()
        proposed = self.strategy.propose(ask.requested)
        self.history.ask_seconds.append(time.perf_counter() - started)
        recorded = [r.trial for r in records]
        if proposed[: len(recorded)] != recorded:
            # A deterministic strategy re-proposes exactly what it proposed before. If it does
            # not (e.g. another number of threads changed floating-point sums), the store wins:
            # evaluations already paid for are never discarded.
            log.warning("the strategy proposed a different batch than the store holds; continuing with the stored batch")
            self.strategy.release(proposed)
            self.strategy.claim(recorded)
        elif len(proposed) > len(recorded):
            self.strategy.release(proposed[len(recorded) :])  # a store of an older version recorded fewer
        slots = [_Slot(r.batch, r.position, r.trial, r.id, r.evaluation, r.seconds or 0.0, twin_key=self._twin_key(r.trial)) for r in records]
        self.batches.append(slots)
        return slots
