"""External multi-fidelity optimisers as peers of the multi-fidelity benchmark, each driven
the way its documentation intends, on the same objective and budget as the framework's
strategies. They are optional dependencies (``pip install .[mf-peers]``).

- ``optuna_tpe_hyperband``: Optuna's multivariate TPE sampler with its ``HyperbandPruner``
  (BOHB-like): every trial reports its value after each epoch and stops when pruned.
- ``smac_mf``: SMAC3's ``MultiFidelityFacade`` (random-forest BO with Hyperband) on the
  space's ConfigSpace, with epochs as the budget.

Each returns the search's :data:`CostEvent` list: after every trial, the
total cost spent (the objective charges continued runs their extra epochs only) and the
trial's value if it ran to full fidelity.
"""
from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from typing import Any

from nas.errors import NASError
from nas.fidelity import HIGH_FIDELITY
from nas.space import SearchSpace

#: One finished trial of a search: the total cost spent once it finished, and its value if
#: it was a successful full-fidelity evaluation (else ``None``).
CostEvent = tuple[float, "float | None"]

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


def _max_epochs(objective: Any) -> int:
    return int(objective.fidelity.hi_epochs)


def optuna_tpe_hyperband(space: SearchSpace, objective: Any, budget: float, seed: int, options: dict[str, Any]) -> list[CostEvent]:
    """Optuna TPE (multivariate, grouped for the conditional space) + ``HyperbandPruner``,
    reporting each epoch's value as a training loop does (Optuna's documented pattern)."""
    optuna = require("optuna_tpe_hyperband")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = _max_epochs(objective)
    pruner = optuna.pruners.HyperbandPruner(min_resource=int(options.get("min_resource", 1)), max_resource=epochs, reduction_factor=int(options.get("reduction_factor", 3)))
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    spent, events = 0.0, []
    while spent < budget:
        trial = study.ask()
        encoding = space.suggest(trial)
        value = math.nan
        for epoch in range(1, epochs + 1):
            evaluation = objective.evaluate(encoding, objective.fidelity.name(epoch))
            spent += evaluation.cost
            value = evaluation.value
            trial.report(value, epoch)
            if epoch < epochs and (trial.should_prune() or spent >= budget):
                break
        if epoch == epochs:
            study.tell(trial, value)
            events.append((spent, value))
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            events.append((spent, None))
    return events


def _configspace(space: SearchSpace) -> Any:
    """The space's ConfigSpace (conditions included) from the shipped ``config_space.json``,
    without YAHPO Gym's name prefix and without its ``epoch`` (the budget here)."""
    from ConfigSpace.read_and_write import json as cs_json

    from nas.objectives.surrogate_benchmark import YAHPO_PREFIX
    from nas.paths import resolve_path

    if space.name != "nb301":
        raise NASError(f"The SMAC peer knows the ConfigSpace of 'nb301' only, not of {space.name!r}.")
    raw = json.loads(resolve_path("package://nb301/config_space.json").read_text())
    strip = lambda name: name.removeprefix(YAHPO_PREFIX)  # noqa: E731
    raw["hyperparameters"] = [{**h, "name": strip(h["name"])} for h in raw["hyperparameters"] if strip(h["name"]) != "epoch"]
    raw["conditions"] = [{**c, "child": strip(c["child"]), "parent": strip(c["parent"])} for c in raw["conditions"]]
    return cs_json.read(json.dumps(raw))


def smac_mf(space: SearchSpace, objective: Any, budget: float, seed: int, options: dict[str, Any]) -> list[CostEvent]:
    """SMAC3's ``MultiFidelityFacade`` with Hyperband, asked and told one trial at a time."""
    smac = require("smac_mf")
    from smac.runhistory.dataclasses import TrialValue

    epochs = _max_epochs(objective)
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
    spent, events = 0.0, []
    while spent < budget:
        info = facade.ask()
        encoding = space.from_config(dict(info.config))
        fidelity = objective.fidelity.name(max(1, min(epochs, int(round(info.budget or epochs)))))
        evaluation = objective.evaluate(encoding, fidelity)
        spent += evaluation.cost
        facade.tell(info, TrialValue(cost=1.0 - evaluation.value / 100.0))
        events.append((spent, evaluation.value if fidelity == HIGH_FIDELITY else None))
    return events


PEERS: dict[str, Callable[[SearchSpace, Any, float, int, dict[str, Any]], list[CostEvent]]] = {
    "optuna_tpe_hyperband": optuna_tpe_hyperband,
    "smac_mf": smac_mf,
}


def run_peer(name: str, space: SearchSpace, objective: Any, budget: float, seed: int, options: dict[str, Any]) -> list[CostEvent]:
    """Run peer ``name`` until ``budget`` equivalent full evaluations are spent."""
    if name not in PEERS:
        raise NASError(f"Unknown peer {name!r}; valid peers are {', '.join(PEERS)}.")
    require(name)
    return PEERS[name](space, objective, budget, seed, options)
