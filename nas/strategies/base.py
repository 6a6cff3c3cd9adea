"""The interface every search strategy implements: ``ask`` for encodings, ``tell`` results.

A strategy's state is a function of its seed and the sequence of results it was told,
so it can be rebuilt exactly by replaying a store of evaluations.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Sequence

import torch

from nas.space import Encoding, SearchSpace
from nas.trial import PRUNED, EpochGate, Trial, pruned_epoch

if TYPE_CHECKING:
    from nas.strategies.pruning import PruningRule
    from nas.trial import Evaluation


class Strategy(ABC):
    """Base class: keeps the observations and the random generator.

    Failed evaluations are told as ``NaN``. They are never suggested again, and model-based
    strategies train on them as the worst value observed so far (a failure is evidence
    that the region is bad, not the absence of evidence).
    """

    #: How many suggestions one ``ask`` returns when the caller does not say.
    default_batch_size: int = 1
    #: Whether *twins* of seen or pending members (equal :meth:`~nas.space.SearchSpace.function_keys`:
    #: the same network) count as taken too. A search that reuses a twin's result instead of
    #: training it (``nas.run`` with a training objective) sets it, so that no suggestion is
    #: spent on a network already trained.
    skip_twins: bool = False
    #: Stops hopeless training runs between epochs (:mod:`nas.strategies.pruning`); set by
    #: the caller (``pruning=median``), fed by the search with every finished evaluation.
    pruning: "PruningRule | None" = None

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.encodings: list[Encoding] = []
        self.values: list[float] = []
        self.seen: set[Encoding] = set()
        self.pending: set[Encoding] = set()
        #: ``(encoding, epoch, value)`` of runs a pruning rule stopped: their last validated
        #: epoch and its value. They are seen (never suggested again) but are no full evaluations.
        self.pruned: list[tuple[Encoding, int, float]] = []

    @abstractmethod
    def ask(self, n: int | None = None) -> list[Encoding]:
        """Up to ``n`` new encodings to evaluate (never one already seen or pending)."""

    def propose(self, n: int | None = None) -> list[Trial]:
        """Up to ``n`` trials to run. Mono-fidelity strategies propose full evaluations of :meth:`ask`."""
        return [Trial(enc) for enc in self.ask(n)]

    def observe(self, trials: Sequence[Trial], evaluations: Sequence["Evaluation"]) -> None:
        """Record finished trials. Mono-fidelity strategies :meth:`tell` the values of full
        evaluations and :meth:`tell_pruned` the runs a pruning rule stopped."""
        done = [(t, e) for t, e in zip(trials, evaluations) if e.status != PRUNED]
        self.tell([t.encoding for t, _ in done], [e.value for _, e in done])
        for trial, evaluation in zip(trials, evaluations):
            if evaluation.status == PRUNED:
                self.tell_pruned(trial.encoding, pruned_epoch(evaluation), evaluation.value)

    def tell_pruned(self, encoding: Encoding, epoch: int, value: float) -> None:
        """Record a run stopped after ``epoch`` epochs at ``value``: seen, not a full evaluation.

        Model-free strategies only never suggest it again; model-based ones also learn from
        it as a lower-fidelity observation (BO: :func:`~nas.strategies.pruning.impute_pruned`).
        """
        enc = tuple(encoding)
        self.pruned.append((enc, epoch, float(value)))
        self.seen.add(enc)
        self.pending.discard(enc)

    def stop_rule(self, trial: Trial) -> EpochGate | None:
        """What the run of ``trial`` is asked after each epoch: the pruning rule's gate as
        the observations stand now (``None`` without pruning)."""
        return self.pruning.gate() if self.pruning is not None else None

    def release(self, trials: Sequence[Trial]) -> None:
        """Forget proposals that will not be evaluated (they may be proposed again)."""
        self.pending.difference_update(t.encoding for t in trials)

    def claim(self, trials: Sequence[Trial]) -> None:
        """Mark trials chosen elsewhere (e.g. read from a store) as pending."""
        self.pending.update(t.encoding for t in trials)

    def tell(self, encodings: Sequence[Encoding], values: Sequence[float]) -> None:
        """Record results; ``NaN`` marks a failed evaluation."""
        for enc, value in zip(encodings, values):
            enc = tuple(enc)
            self.encodings.append(enc)
            self.values.append(float(value))
            self.seen.add(enc)
            self.pending.discard(enc)

    def _mark_pending(self, encodings: list[Encoding]) -> list[Encoding]:
        self.pending.update(encodings)
        return encodings

    @property
    def best(self) -> tuple[Encoding, float] | None:
        """Best successful observation so far."""
        scored = [(v, i) for i, v in enumerate(self.values) if not math.isnan(v)]
        if not scored:
            return None
        value, index = max(scored)
        return self.encodings[index], value

    def observed_values(self) -> torch.Tensor:
        """``n`` observed values with failures replaced by the worst successful value."""
        values = torch.tensor(self.values, dtype=torch.float64)
        ok = ~torch.isnan(values)
        floor = values[ok].min() if bool(ok.any()) else torch.tensor(0.0, dtype=torch.float64)
        return torch.where(ok, values, floor)

    def identity_keys(self, codes: torch.Tensor) -> torch.Tensor:
        """``n`` keys of ``n x d`` codes under which two members count as the same suggestion:
        their function keys with :attr:`skip_twins`, else their encodings' keys."""
        return self.space.function_keys(codes) if self.skip_twins else self.space.keys(codes)

    def random_unseen(self, n: int) -> list[Encoding]:
        """``n`` distinct uniformly drawn members that were neither seen nor are pending
        (with :attr:`skip_twins`: nor twins of those, nor of each other)."""
        out: list[Encoding] = []
        if n <= 0:
            return out
        taken = self.seen | self.pending
        twins: set[int] | None = None
        if self.skip_twins:
            twins = set(self.identity_keys(torch.tensor(sorted(taken), dtype=torch.long)).tolist()) if taken else set()
        for _ in range(100):
            draw = self.space.sample(max(2 * n, 16), self.generator)
            keys = self.identity_keys(draw).tolist() if twins is not None else [None] * draw.shape[0]
            for row, key in zip(draw.tolist(), keys):
                enc = tuple(row)
                if enc not in taken and (twins is None or key not in twins):
                    taken.add(enc)
                    if twins is not None:
                        twins.add(key)
                    out.append(enc)
                    if len(out) == n:
                        return out
        return out  # the space is (nearly) exhausted

    def predict(self, codes: torch.Tensor) -> torch.Tensor | None:
        """Mean predicted objective for ``n x d`` codes, for strategies that have a model."""
        return None
