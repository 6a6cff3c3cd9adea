"""External multi-fidelity optimisers as peers of the multi-fidelity benchmark, each driven
the way its documentation intends, on the same objective and budget as the framework's
strategies. They are optional dependencies (``pip install .[mf-peers]``).

- ``optuna_tpe_hyperband``: Optuna's multivariate TPE sampler with its ``HyperbandPruner``
  (BOHB-like): every trial reports its value after each epoch and stops when pruned.
- ``smac_mf``: SMAC3's ``MultiFidelityFacade`` (random-forest BO with Hyperband) on the
  space's ConfigSpace, with epochs as the budget. SMAC evaluates every budget from scratch
  (it never assumes continuation), so it also runs on objectives whose fidelities cannot be
  continued, such as a table with a separate low-fidelity file: there only the budgets the
  table holds exist, and ``eta`` is chosen so that SMAC's Hyperband has exactly those two
  (``eta=16`` for 12 and 200 epochs: budgets 12.5, evaluated as the 12-epoch run, and 200).

Each evaluates through a :class:`CostTracker`, which charges every evaluation (the objective
charges continued runs their extra epochs only), records the search's :data:`CostEvent`
list, and says when the search must stop (budget spent, or the optimum found).
"""
from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
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


def _configspace(space: SearchSpace) -> Any:
    """The space's ConfigSpace: NAS-Bench-301's (conditions included) from the shipped
    ``config_space.json``, without YAHPO Gym's name prefix and without its ``epoch`` (the
    budget here); for any other space one categorical variable per variable of the space,
    whose values are its codes."""
    from ConfigSpace import Categorical, ConfigurationSpace
    from ConfigSpace.read_and_write import json as cs_json

    from nas.objectives.surrogate_benchmark import YAHPO_PREFIX
    from nas.paths import resolve_path

    if space.name != "nb301":
        return ConfigurationSpace({name: Categorical(name, list(range(len(options)))) for name, options in zip(space.variable_names, space.choices)})
    raw = json.loads(resolve_path("package://nb301/config_space.json").read_text())
    strip = lambda name: name.removeprefix(YAHPO_PREFIX)  # noqa: E731
    raw["hyperparameters"] = [{**h, "name": strip(h["name"])} for h in raw["hyperparameters"] if strip(h["name"]) != "epoch"]
    raw["conditions"] = [{**c, "child": strip(c["child"]), "parent": strip(c["parent"])} for c in raw["conditions"]]
    return cs_json.read(json.dumps(raw))


def _encoding_of(space: SearchSpace, config: dict[str, Any]) -> Encoding:
    """The encoding of a configuration of :func:`_configspace`."""
    if space.name == "nb301":
        return space.from_config(config)  # type: ignore[attr-defined]
    return tuple(int(config[name]) for name in space.variable_names)


def smac_mf(space: SearchSpace, tracker: CostTracker, seed: int, options: dict[str, Any]) -> None:
    """SMAC3's ``MultiFidelityFacade`` with Hyperband, asked and told one trial at a time;
    SMAC's budget is rounded to the nearest number of epochs the objective offers."""
    smac = require("smac_mf")
    from smac.runhistory.dataclasses import TrialValue

    schedule = tracker.schedule
    epochs = schedule.hi_epochs
    offered = tracker.offered_epochs()
    scenario = smac.Scenario(
        _configspace(space), deterministic=True, n_trials=100_000, min_budget=int(options.get("min_budget", 1)), max_budget=epochs, seed=seed,
        output_directory=options.get("output_directory", f"/tmp/nas-smac-{seed}"),
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
        facade.tell(info, TrialValue(cost=1.0 - evaluation.value / 100.0 if evaluation.status == "ok" else 1.0))


PEERS: dict[str, Callable[[SearchSpace, CostTracker, int, dict[str, Any]], None]] = {
    "optuna_tpe_hyperband": optuna_tpe_hyperband,
    "smac_mf": smac_mf,
}


def run_peer(name: str, space: SearchSpace, tracker: CostTracker, seed: int, options: dict[str, Any]) -> list[CostEvent]:
    """Run peer ``name`` until the tracker's budget is spent (or its stop value found); its events."""
    if name not in PEERS:
        raise NASError(f"Unknown peer {name!r}; valid peers are {', '.join(PEERS)}.")
    require(name)
    PEERS[name](space, tracker, seed, options)
    return tracker.events
