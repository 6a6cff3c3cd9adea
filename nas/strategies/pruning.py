"""Pruning: stopping a training run between epochs when it looks hopeless.

A rule watches the learning curves of the runs a search has observed (every evaluation's
``value_at_epoch_<k>`` metrics, the pruned ones included) and, when a trial starts, turns
them into an :class:`~nas.trial.EpochGate`: plain data that travels with the trial to
wherever it trains (this process, a worker process, Ray, Slurm, every DDP rank) and that the
training callback asks after each epoch (:class:`~nas.train.callbacks.PruningCallback`).
The gate is a snapshot, a function of the observations told so far, so a search replayed
from its store gives every trial the same gate again and resumes exactly.

Rules (``configs/pruning/<name>.yaml``):

- ``median`` (:class:`MedianStopping`): stop a run whose value after epoch ``k`` is below
  the median of the values the completed runs had after epoch ``k`` (Golovin et al. 2017,
  Google Vizier; Optuna's ``MedianPruner``), from ``warmup_epochs`` on, once ``min_runs``
  completed runs are known.
- ``asha`` (:class:`AsynchronousHalving`): rungs at ``min_epochs * eta**i`` epochs; at a
  rung a run goes on only if its value is in the top ``1 / eta`` of the values recorded at
  that rung, its own included (asynchronous successive halving, Li et al. 2020, as Ray
  Tune's ``ASHAScheduler`` stops trials).

No rule stops a run at its last epoch: it would save nothing. A pruned run is stored with
its reason and charged the epochs it ran; strategies learn from it as a lower-fidelity
observation (see :meth:`nas.strategies.base.Strategy.tell_pruned`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from nas.errors import NASError, whole_number
from nas.fidelity import epoch_of_metric_key
from nas.trial import PRUNED, EpochGate, Evaluation, Trial

#: The rules ``pruning=<name>`` selects; ``none`` prunes nothing.
PRUNING_RULES = ("none", "median", "asha")
#: Metrics that mark an evaluation whose curve was not trained for it (a twin's copy).
_COPIED = ("twin_of",)


def curve_of(evaluation: Evaluation) -> dict[int, float]:
    """Epoch -> validated value of one evaluation (empty when it reports no epochs)."""
    epochs = {key: epoch_of_metric_key(key) for key in evaluation.metrics}
    return {epoch: float(evaluation.metrics[key]) for key, epoch in epochs.items() if epoch is not None and math.isfinite(evaluation.metrics[key])}


class PruningRule:
    """Keeps the observed learning curves and builds each trial's :class:`EpochGate`.

    Args:
        min_runs: runs that must have reached an epoch before any run is stopped there.
    """

    name = "none"
    #: The gate's comparison (see :class:`~nas.trial.EpochGate`).
    quantile = 0.5
    include_own = False
    #: Whether runs stopped early count at the epochs they reached (a rung's record), or only
    #: runs that trained all their epochs do (the median rule's reference, as Optuna's).
    counts_pruned = True

    def __init__(self, min_runs: int = 5) -> None:
        whole_number("pruning.min_runs", min_runs, minimum=1)
        self.min_runs = min_runs
        self.curves: list[dict[int, float]] = []
        self.completed: list[bool] = []  # per curve: the run trained all its epochs

    def observe(self, trials: Sequence[Trial], evaluations: Sequence[Evaluation]) -> None:
        """Record the curves of finished evaluations (copies of a twin's result are not new runs)."""
        for evaluation in evaluations:
            if not any(key in evaluation.metrics for key in _COPIED):
                curve = curve_of(evaluation)
                if curve:
                    self.curves.append(curve)
                    self.completed.append(evaluation.status == "ok")

    def check(self, epochs: int) -> None:
        """Refuse settings that could never stop a run of ``epochs`` epochs."""
        if not self.checked_epochs(epochs):
            raise NASError(f"The {self.name} rule as set checks no epoch before the last of a {epochs}-epoch run, so it would never prune; {self.valid_range(epochs)}.")

    def checked_epochs(self, epochs: int) -> list[int]:
        """The epochs after which a run of ``epochs`` epochs may be stopped."""
        return []

    def valid_range(self, epochs: int) -> str:
        return "use pruning=none"

    def values_at(self, epoch: int) -> tuple[float, ...]:
        return tuple(curve[epoch] for curve, done in zip(self.curves, self.completed) if epoch in curve and (done or self.counts_pruned))

    def gate(self) -> EpochGate | None:
        """The gate of a run starting now (``None``: nothing to check yet): the epochs the
        rule checks before the last of the longest run observed (the run's own last epoch is
        never checked either, see :class:`~nas.train.callbacks.PruningCallback`)."""
        longest = max((max(curve) for curve in self.curves), default=0)
        cutoffs = {k: values for k in self.checked_epochs(longest) if len(values := self.values_at(k)) >= self.min_runs}
        return EpochGate(self.name, cutoffs, self.quantile, self.include_own) if cutoffs else None


class MedianStopping(PruningRule):
    """The median stopping rule (see the module doc).

    Args:
        warmup_epochs: the first epoch after which a run may be stopped (at least 1).
        min_runs: runs that must have reached an epoch before any run is stopped there.
    """

    name = "median"
    counts_pruned = False

    def __init__(self, warmup_epochs: int = 1, min_runs: int = 5) -> None:
        super().__init__(min_runs)
        whole_number("pruning.warmup_epochs", warmup_epochs, minimum=1)
        self.warmup_epochs = warmup_epochs

    def checked_epochs(self, epochs: int) -> list[int]:
        return list(range(self.warmup_epochs, epochs))

    def valid_range(self, epochs: int) -> str:
        return f"warmup_epochs must be between 1 and {epochs - 1}" if epochs > 1 else "runs of one epoch cannot be pruned"


class AsynchronousHalving(PruningRule):
    """Asynchronous successive halving's stopping rule (see the module doc).

    Args:
        min_epochs: the first rung (at least 1).
        eta: the reduction factor between rungs (at least 2): the top ``1 / eta`` go on.
        min_runs: values a rung must hold before it stops any run.
    """

    name = "asha"
    include_own = True

    def __init__(self, min_epochs: int = 1, eta: int = 3, min_runs: int = 3) -> None:
        super().__init__(min_runs)
        whole_number("pruning.min_epochs", min_epochs, minimum=1)
        whole_number("pruning.eta", eta, minimum=2)
        self.min_epochs, self.eta = min_epochs, eta
        self.quantile = 1.0 - 1.0 / eta

    def checked_epochs(self, epochs: int) -> list[int]:
        rungs, rung = [], self.min_epochs
        while rung < epochs:
            rungs.append(rung)
            rung *= self.eta
        return rungs

    def valid_range(self, epochs: int) -> str:
        return f"min_epochs must be between 1 and {epochs - 1}" if epochs > 1 else "runs of one epoch cannot be pruned"


def build_pruning(rule: str | None = None, **settings: int) -> PruningRule | None:
    """The rule named ``rule`` with its ``settings`` (``None`` or ``"none"``: no pruning)."""
    if rule in (None, "none"):
        return None
    rules = {"median": MedianStopping, "asha": AsynchronousHalving}
    if rule not in rules:
        raise NASError(f"Unknown pruning rule {rule!r}; valid rules are {', '.join(PRUNING_RULES)}.")
    try:
        return rules[rule](**settings)
    except TypeError:
        valid = {"median": "warmup_epochs, min_runs", "asha": "min_epochs, eta, min_runs"}[rule]
        raise NASError(f"The {rule} pruning rule takes the settings {valid}; got {', '.join(settings)}.") from None


def strategy_pruning(cfg: Mapping[str, Any], name: str) -> PruningRule | None:
    """The rule a benchmark's ``pruning.<name>`` gives strategy ``name`` (``None`` without one)."""
    return build_pruning(**((cfg.get("pruning") or {}).get(name) or {}))


def impute_pruned(pruned: Sequence[tuple[int, float]], curves: Sequence[dict[int, float]], final_epoch: int) -> list[float]:
    """A full-length value for each pruned run, from its value at the epoch it stopped.

    Each pruned run ``(epoch k, value v)`` gets the final value of the completed runs at the
    same rank: the quantile ``q`` of ``v`` among the completed runs' values after epoch
    ``k``, mapped to the ``q`` quantile of their final values. Ranks carry over between
    epochs far better than values do (a run's accuracy keeps rising), so a surrogate
    trained on these sees a pruned run as what its short curve says: at about the rank it
    held when stopped. Without completed runs reaching epoch ``k`` the run gets the worst
    final value observed (``nan`` when there is none).

    Args:
        pruned: ``(epoch, value)`` of each pruned run.
        curves: the curves of completed runs (epoch -> value), ``final_epoch`` included.
    """
    complete = [c for c in curves if final_epoch in c]
    finals = torch.tensor([c[final_epoch] for c in complete], dtype=torch.float64)
    out = []
    for epoch, value in pruned:
        early = torch.tensor([c[epoch] for c in complete if epoch in c], dtype=torch.float64)
        if early.numel() == 0 or finals.numel() == 0:
            out.append(float(finals.min()) if finals.numel() else math.nan)
            continue
        rank = float((early < value).double().mean() + 0.5 * (early == value).double().mean())
        out.append(float(torch.quantile(finals, rank)))
    return out


__all__ = ["PRUNED", "PRUNING_RULES", "AsynchronousHalving", "MedianStopping", "PruningRule", "build_pruning", "curve_of", "impute_pruned", "strategy_pruning"]
