"""External multi-fidelity optimisers as peers of the multi-fidelity benchmark, each driven
the way its documentation intends, on the same objective and budget as the framework's
strategies. They are optional dependencies (``pip install .[mf-peers]``).

- ``optuna_tpe_hyperband``: Optuna's multivariate TPE sampler with its ``HyperbandPruner``
  (BOHB-like): every trial reports its value after each epoch and stops when pruned.
- ``smac_mf``: SMAC3's ``MultiFidelityFacade`` (random-forest BO with Hyperband) on the
  space's ConfigSpace (:func:`_configspace`), with epochs as the budget. SMAC evaluates every
  budget from scratch (it never assumes continuation), so it also runs on objectives whose
  fidelities cannot be continued, such as a table with a separate low-fidelity file: there
  only the budgets the table holds exist, and ``eta`` is chosen so that SMAC's Hyperband has
  exactly those two (``eta=16`` for 12 and 200 epochs: budgets 12.5, evaluated as the
  12-epoch run, and 200).
- ``smac_hpo``: SMAC3's ``HyperparameterOptimizationFacade`` (random-forest BO, SMAC's
  recommended facade for hyperparameter optimisation) on the same ConfigSpace, full
  evaluations only; its scenario's ``n_trials`` is the budget in full evaluations, which
  sizes SMAC's Sobol initial design as SMAC intends (a quarter of it at most).

On a mixed space (:class:`nas.spaces.hparams.MixedSpace`) the SMAC peers see its real
integers and floats (log scales included) and its conditions, and their configurations are
snapped to the space's grid; Optuna's TPE suggests the same values through ``space.suggest``.
Each SMAC run writes its files to a temporary directory, removed when it ends (seeds and
benchmarks run side by side in other processes never share one).

Each evaluates through a :class:`CostTracker`, which charges every evaluation (the objective
charges continued runs their extra epochs only), records the search's :data:`CostEvent`
list, and says when the search must stop (budget spent, or the optimum found).
"""
from __future__ import annotations

import importlib
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nas.errors import NASError
from nas.fidelity import HIGH_FIDELITY, FidelitySchedule
from nas.objectives.base import Evaluation
from nas.space import Encoding, SearchSpace

#: One finished trial of a search: the total cost spent once it finished, its value if it
#: was a successful full-fidelity evaluation (else ``None``), and its architecture.
CostEvent = tuple[float, "float | None", Encoding]


class CostTracker:
    """Evaluates for a search, charges each evaluation and records its :data:`CostEvent`.

    Args:
        objective: evaluates ``(encoding, fidelity)``.
        schedule: the epochs of a full evaluation and of the low fidelity.
        budget: equivalent full evaluations the search may spend.
        stop_value: a full-fidelity value that ends the search once evaluated (the optimum
            of a table: nothing the search could still find would change what it returns).
    """

    def __init__(self, objective: Any, schedule: FidelitySchedule, budget: float, stop_value: float | None = None) -> None:
        self.objective = objective
        self.schedule = schedule
        self.budget = budget
        self.stop_value = stop_value
        self.spent = 0.0
        self.events: list[CostEvent] = []
        self.reached = False

    def record(self, encoding: Encoding, fidelity: str, evaluation: Evaluation) -> None:
        """Charge and record an evaluation made elsewhere (by the search loop)."""
        self.spent += evaluation.cost
        full = fidelity == HIGH_FIDELITY and evaluation.status == "ok"
        self.events.append((self.spent, evaluation.value if full else None, tuple(encoding)))
        if full and self.stop_value is not None and evaluation.value >= self.stop_value - 1e-9:
            self.reached = True

    def evaluate(self, encoding: Encoding, fidelity: str) -> Evaluation:
        evaluation = self.objective.evaluate(encoding, fidelity)
        self.record(encoding, fidelity, evaluation)
        return evaluation

    def offered_epochs(self) -> list[int]:
        """The numbers of epochs the objective can evaluate: every one up to a full
        evaluation, or only the schedule's fidelities (a table)."""
        cost_of = getattr(self.objective, "planned_cost", None)
        epochs = []
        for e in range(1, self.schedule.hi_epochs + 1):
            try:
                if cost_of is not None:
                    cost_of(self.schedule.name(e))
            except NASError:
                continue
            epochs.append(e)
        return epochs

    @property
    def running(self) -> bool:
        """Whether the search goes on: budget left, and the stop value not reached."""
        return self.spent < self.budget and not self.reached

#: Peers that report every epoch of a run and so need an objective that continues runs.
NEEDS_CONTINUATION = ("optuna_tpe_hyperband",)

#: Peer name -> (module it needs, pip requirement).
REQUIREMENTS: dict[str, tuple[str, str]] = {
    "optuna_tpe_hyperband": ("optuna", "optuna>=4"),
    "smac_mf": ("smac", "smac>=2"),
    "smac_hpo": ("smac", "smac>=2"),
}


def require(peer: str) -> Any:
    """The module ``peer`` needs, or a :class:`NASError` saying how to install it."""
    module, requirement = REQUIREMENTS[peer]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise NASError(f"The peer {peer!r} needs the optional dependency {module}, which is not installed: pip install '{requirement}' (or pip install '.[mf-peers]').") from None


def optuna_tpe_hyperband(space: SearchSpace, tracker: CostTracker, seed: int, options: dict[str, Any]) -> None:
    """Optuna TPE (multivariate, grouped for the conditional space) + ``HyperbandPruner``,
    reporting each epoch's value as a training loop does (Optuna's documented pattern)."""
    optuna = require("optuna_tpe_hyperband")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = tracker.schedule.hi_epochs
    pruner = optuna.pruners.HyperbandPruner(min_resource=int(options.get("min_resource", 1)), max_resource=epochs, reduction_factor=int(options.get("reduction_factor", 3)))
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    while tracker.running:
        trial = study.ask()
        encoding = space.suggest(trial)
        value = math.nan
        for epoch in range(1, epochs + 1):
            value = tracker.evaluate(encoding, tracker.schedule.name(epoch)).value
            trial.report(value, epoch)
            if epoch < epochs and (trial.should_prune() or not tracker.running):
                break
        if epoch == epochs:
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def _configspace(space: SearchSpace, seed: int | None = None) -> Any:
    """The space's ConfigSpace (SMAC seeds it): the space's own if its class has one
    (``space.config_space(seed)``: a mixed space's integers, floats with their log scales, and
    conditions); NAS-Bench-301's (conditions included) from the shipped ``config_space.json``,
    without YAHPO Gym's name prefix and without its ``epoch`` (the budget here); for any other
    space one categorical variable per variable of the space, whose values are its codes."""
    from ConfigSpace import Categorical, ConfigurationSpace
    from ConfigSpace.read_and_write import json as cs_json

    from nas.objectives.surrogate_benchmark import YAHPO_PREFIX
    from nas.paths import resolve_path

    if callable(getattr(type(space), "config_space", None)):  # the class's own, not one a product reads through
        return space.config_space(seed)  # type: ignore[attr-defined]
    if space.name != "nb301":
        return ConfigurationSpace({name: Categorical(name, list(range(len(options)))) for name, options in zip(space.variable_names, space.choices)})
    raw = json.loads(resolve_path("package://nb301/config_space.json").read_text())
    strip = lambda name: name.removeprefix(YAHPO_PREFIX)  # noqa: E731
    raw["hyperparameters"] = [{**h, "name": strip(h["name"])} for h in raw["hyperparameters"] if strip(h["name"]) != "epoch"]
    raw["conditions"] = [{**c, "child": strip(c["child"]), "parent": strip(c["parent"])} for c in raw["conditions"]]
    return cs_json.read(json.dumps(raw))


def _encoding_of(space: SearchSpace, config: dict[str, Any]) -> Encoding:
    """The encoding of a configuration of :func:`_configspace` (a mixed space's numbers
    snapped to its grid)."""
    if callable(getattr(type(space), "from_config_space", None)):
        return space.from_config_space(config)  # type: ignore[attr-defined]
    if space.name == "nb301":
        return space.from_config(config)  # type: ignore[attr-defined]
    return tuple(int(config[name]) for name in space.variable_names)


@contextmanager
def _smac_output(seed: int, options: dict[str, Any]) -> Iterator[Path]:
    """Where SMAC writes its run history: ``options["output_directory"]`` if given (kept), else
    a fresh temporary directory removed afterwards."""
    if options.get("output_directory"):
        yield Path(options["output_directory"])
        return
    with tempfile.TemporaryDirectory(prefix=f"nas-smac-{seed}-") as folder:
        yield Path(folder)


def _smac_cost(evaluation: Evaluation) -> float:
    """SMAC minimises: the error in [0, 1] of a value in %, 1 for a failure."""
    return 1.0 - evaluation.value / 100.0 if evaluation.status == "ok" and evaluation.value == evaluation.value else 1.0


def smac_mf(space: SearchSpace, tracker: CostTracker, seed: int, options: dict[str, Any]) -> None:
    """SMAC3's ``MultiFidelityFacade`` with Hyperband, asked and told one trial at a time;
    SMAC's budget is rounded to the nearest number of epochs the objective offers."""
    smac = require("smac_mf")
    from smac.runhistory.dataclasses import TrialValue

    schedule = tracker.schedule
    epochs = schedule.hi_epochs
    offered = tracker.offered_epochs()
    with _smac_output(seed, options) as output:
        scenario = smac.Scenario(
            _configspace(space, seed), deterministic=True, n_trials=100_000, min_budget=int(options.get("min_budget", 1)), max_budget=epochs, seed=seed,
            output_directory=output,
        )
        intensifier = smac.intensifier.Hyperband(scenario, eta=int(options.get("eta", 3)), incumbent_selection="highest_budget")
        facade = smac.MultiFidelityFacade(
            scenario, lambda config, seed=0, budget=epochs: 0.0, intensifier=intensifier,
            initial_design=smac.MultiFidelityFacade.get_initial_design(scenario, n_configs=int(options.get("initial_configs", 5))),
            overwrite=True, logging_level=40,
        )
        while tracker.running:
            info = facade.ask()
            asked = info.budget or epochs
            run = min(offered, key=lambda e: abs(e - asked))
            evaluation = tracker.evaluate(_encoding_of(space, dict(info.config)), schedule.name(run))
            facade.tell(info, TrialValue(cost=_smac_cost(evaluation)))


#: Proposals in a row of configurations already evaluated after which ``smac_hpo`` gives up.
_MAX_KNOWN_IN_A_ROW = 1000


def smac_hpo(space: SearchSpace, tracker: CostTracker, seed: int, options: dict[str, Any]) -> None:
    """SMAC3's ``HyperparameterOptimizationFacade`` (random-forest BO with SMAC's defaults:
    Sobol initial design, local and random search of the expected improvement, a fifth of
    the configurations at random), asked and told one full evaluation at a time. Its
    ``n_trials`` is the budget in full evaluations (``options["n_trials"]`` overrides it).
    A configuration that snaps to an encoding already evaluated is told its value again at
    no cost."""
    smac = require("smac_hpo")
    from smac.runhistory.dataclasses import TrialValue

    n_trials = int(options.get("n_trials") or max(1, math.ceil(tracker.budget)))
    known: dict[Encoding, float] = {}
    with _smac_output(seed, options) as output:
        scenario = smac.Scenario(_configspace(space, seed), deterministic=True, n_trials=n_trials, seed=seed, output_directory=output)
        facade = smac.HyperparameterOptimizationFacade(scenario, lambda config, seed=0: 0.0, overwrite=True, logging_level=40)
        in_a_row = 0
        while tracker.running and in_a_row < _MAX_KNOWN_IN_A_ROW:
            info = facade.ask()
            encoding = _encoding_of(space, dict(info.config))
            if encoding in known:
                in_a_row += 1
            else:
                in_a_row = 0
                known[encoding] = _smac_cost(tracker.evaluate(encoding, HIGH_FIDELITY))
            facade.tell(info, TrialValue(cost=known[encoding]))


PEERS: dict[str, Callable[[SearchSpace, CostTracker, int, dict[str, Any]], None]] = {
    "optuna_tpe_hyperband": optuna_tpe_hyperband,
    "smac_mf": smac_mf,
    "smac_hpo": smac_hpo,
}


def run_peer(name: str, space: SearchSpace, tracker: CostTracker, seed: int, options: dict[str, Any]) -> list[CostEvent]:
    """Run peer ``name`` until the tracker's budget is spent (or its stop value found); its events."""
    if name not in PEERS:
        raise NASError(f"Unknown peer {name!r}; valid peers are {', '.join(PEERS)}.")
    require(name)
    PEERS[name](space, tracker, seed, options)
    return tracker.events
