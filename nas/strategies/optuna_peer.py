"""Optuna's samplers as external baselines, driven through Optuna's own ask/tell API.

Optuna is an optional dependency (``pip install .[peers]``). Each categorical variable
of the space becomes one ``suggest_categorical`` (only the active ones in a conditional
space, see :meth:`SearchSpace.suggest`); a mixed space's integers and floats become
``suggest_int`` / ``suggest_float`` with their log scales, so TPE and the GP model real
numbers, and the values they suggest are snapped to the space's grid. When a sampler
proposes an architecture that was already evaluated (or a value that snaps to one), its
known value is told back at no cost and the sampler is asked again: the comparison counts
distinct evaluations for every strategy alike.

TPE runs multivariate and grouped (``group=True``, Optuna's setting for conditional
spaces: each set of variables active together gets its own joint model). The GP models the
variables every trial has; a conditional variable is drawn by its independent (random)
sampler, which Optuna documents, without a warning per trial.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nas.errors import NASError
from nas.space import Encoding, SearchSpace
from nas.strategies.base import Strategy
from nas.trial import Trial

SAMPLERS = ("tpe", "gp", "nsga2")
#: Optuna pruners a study may use on training objectives: ``median`` is Optuna's
#: ``MedianPruner`` with its defaults, as Optuna's PyTorch Lightning example uses it.
PRUNERS = ("none", "median")


class OptunaPruning:
    """Optuna's pruning of one of its trials, through Optuna's PyTorch Lightning pruning
    callback (``optuna-integration``), as Optuna's documentation uses it: the callback reports
    each epoch's validation accuracy to the trial and raises ``TrialPruned`` when the study's
    pruner says so. It works in the search's own process only (an in-memory study).
    """

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def lightning_callback(self) -> Any:
        try:
            from optuna_integration import PyTorchLightningPruningCallback
        except ImportError:
            raise NASError("Optuna's pruning of Lightning runs needs the optional dependency optuna-integration: pip install 'optuna-integration>=4'.") from None
        return PyTorchLightningPruningCallback(self.trial, monitor="val/acc")

    def stopped_by(self, error: BaseException) -> str | None:
        import optuna

        if not isinstance(error, optuna.TrialPruned):
            return None
        return f"pruned by Optuna's {type(self.trial.study.pruner).__name__} ({error}; Optuna counts epochs from 0)"

    def __call__(self, epoch: int, value: float) -> str | None:
        self.trial.report(value, step=epoch - 1)  # the callback's steps count from 0
        return f"pruned by Optuna's {type(self.trial.study.pruner).__name__} after epoch {epoch}" if self.trial.should_prune() else None

    def __getstate__(self) -> dict[str, Any]:
        raise NASError("Optuna's pruning works only in the search's own process (its study lives there); use executor=local with a trainer that trains in one process.")

_MAX_REPROPOSALS = 200


class _Replay:
    """A stand-in for an Optuna trial that answers each ``suggest_*`` of
    :meth:`SearchSpace.suggest` with the value of one encoding, and records them: the
    parameters to ``enqueue_trial`` so that the study's trial is that encoding."""

    def __init__(self, space: SearchSpace, encoding: Encoding) -> None:
        self.codes = dict(zip(space.variable_names, encoding))
        self.cardinalities = dict(zip(space.variable_names, (len(c) for c in space.choices)))
        self.described = space.describe(encoding)
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if name in self.codes and list(choices) == list(range(self.cardinalities[name])):
            value = self.codes[name]  # the space suggests codes
        else:
            value = self.described[name]
        self.params[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        self.params[name] = int(self.described[name])  # type: ignore[call-overload]
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        self.params[name] = float(self.described[name])  # type: ignore[arg-type]
        return self.params[name]


def trial_params(space: SearchSpace, encoding: Encoding) -> dict[str, Any]:
    """The parameters of an Optuna trial whose ``space.suggest`` gives ``encoding``."""
    replay = _Replay(space, encoding)
    space.suggest(replay)
    return replay.params


class OptunaStrategy(Strategy):
    """An Optuna study as a strategy.

    Args:
        sampler: ``tpe`` (multivariate TPE), ``gp`` (``GPSampler``) or ``nsga2`` (``NSGAIISampler``).
        directions: ``maximize`` / ``minimize`` per objective (several: a multi-objective study).
        constraints_func: Optuna's constraint callback (values ``<= 0`` are feasible).
        pruner: ``none``, or ``median`` (Optuna's ``MedianPruner``, asked after every epoch of
            a training run through Optuna's Lightning callback, see :class:`OptunaPruning`).
        sampler_options: passed to the Optuna sampler.
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        sampler: str = "tpe",
        directions: Sequence[str] = ("maximize",),
        constraints_func: Callable[[Any], Sequence[float]] | None = None,
        pruner: str = "none",
        **sampler_options: Any,
    ) -> None:
        super().__init__(space, seed)
        try:
            import optuna
        except ImportError:
            raise NASError("The Optuna baselines need the optional dependency optuna: pip install 'optuna>=4'.") from None
        if sampler not in SAMPLERS:
            raise NASError(f"Unknown Optuna sampler {sampler!r}; valid samplers are {', '.join(SAMPLERS)}.")
        if pruner not in PRUNERS:
            raise NASError(f"Unknown Optuna pruner {pruner!r}; valid pruners are {', '.join(PRUNERS)}.")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if constraints_func is not None:
            sampler_options["constraints_func"] = constraints_func
        if sampler == "tpe":
            impl = optuna.samplers.TPESampler(seed=seed, **{"multivariate": True, "group": True, **sampler_options})
        elif sampler == "nsga2":
            impl = optuna.samplers.NSGAIISampler(seed=seed, **sampler_options)
        else:
            impl = optuna.samplers.GPSampler(seed=seed, **{"warn_independent_sampling": False, **sampler_options})
        self._optuna = optuna
        self.pruner = pruner
        study_pruner = optuna.pruners.MedianPruner() if pruner == "median" else optuna.pruners.NopPruner()
        self.study = optuna.create_study(directions=list(directions), sampler=impl, pruner=study_pruner)
        self._trials: dict[Encoding, list[Any]] = {}
        self._known: dict[Encoding, float | list[float]] = {}
        self._attributes: dict[Encoding, dict[str, Any]] = {}

    def _propose(self) -> tuple[Any, Encoding]:
        trial = self.study.ask()
        return trial, self.space.suggest(trial)

    def ask(self, n: int | None = None) -> list[Encoding]:
        n = n or self.default_batch_size
        out: list[Encoding] = []
        for _ in range(_MAX_REPROPOSALS):
            if len(out) == n:
                break
            trial, enc = self._propose()
            if enc in self._known:
                for key, item in self._attributes.get(enc, {}).items():
                    trial.set_user_attr(key, item)
                self.study.tell(trial, self._known[enc])  # free: the value is already known
            elif enc in self.pending or enc in out or enc in self.seen:  # running, or pruned
                self.study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
            else:
                self._trials.setdefault(enc, []).append(trial)
                out.append(enc)
        if len(out) < n:  # the sampler keeps re-proposing known points: fill up at random
            for enc in self.random_unseen(n - len(out)):
                self.study.enqueue_trial(trial_params(self.space, enc))
                trial, proposed = self._propose()
                self._trials.setdefault(proposed, []).append(trial)
                out.append(proposed)
        return self._mark_pending(out)

    def tell(self, encodings, values) -> None:  # type: ignore[no-untyped-def]
        super().tell(encodings, values)
        floor = float(self.observed_values().min())
        for enc, value in zip(encodings, values):
            self.answer(tuple(enc), floor if value != value else float(value))

    def stop_rule(self, trial: Trial) -> Any:
        """The study's pruner for ``trial``'s run (without one: the search's pruning rule, if any)."""
        trials = self._trials.get(tuple(trial.encoding))
        return OptunaPruning(trials[0]) if self.pruner != "none" and trials else super().stop_rule(trial)

    def tell_pruned(self, encoding: Encoding, epoch: int, value: float) -> None:
        super().tell_pruned(encoding, epoch, value)
        for trial in self._trials.pop(tuple(encoding), []):
            self.study.tell(trial, state=self._optuna.trial.TrialState.PRUNED)

    def answer(self, encoding: Encoding, value: float | list[float], attributes: dict[str, Any] | None = None) -> None:
        """Tell the study the ``value`` (one per objective) of its trials of ``encoding``,
        with user ``attributes`` (e.g. constraint values) set first."""
        self._known[encoding] = value
        self._attributes[encoding] = dict(attributes or {})
        trials = self._trials.pop(encoding, [])
        if not trials:
            # Chosen outside the study (a prior, see nas.strategies.priors): the study learns it
            # as a trial of its own, as Optuna's enqueue_trial intends.
            self.study.enqueue_trial(trial_params(self.space, encoding))
            trial, proposed = self._propose()
            trials = [trial] if proposed == encoding else []
        for trial in trials:
            for key, item in (attributes or {}).items():
                trial.set_user_attr(key, item)
            self.study.tell(trial, value)
