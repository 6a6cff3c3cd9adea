"""No strategy can see a value it has not evaluated: shuffling the searched values of the
architectures a search never evaluated leaves every one of its proposals unchanged.

One test per strategy family (sampling, evolution, local search, BO with and without
pretraining, TPE, multi-fidelity BO, model-based Hyperband, multi-objective BO and NSGA-II). A strategy that
peeked at the table would propose differently once the unevaluated values move; the
negative control below is such a strategy and is caught.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nas.costs.columns import load_columns
from nas.fidelity import HIGH_FIDELITY, LOW_FIDELITY
from nas.acquisition.goals import Goals
from nas.objectives.table import TableObjective
from nas.search import run_search
from nas.spaces.nb201 import NB201Space
from nas.strategies import instantiate_strategy
from nas.strategies.base import Strategy
from nas.strategies.multiobjective import instantiate_front_strategy
from nas.costs.zero_cost import ZeroCostData, zero_cost_from_config
from tests.nas.test_search_benchmark import CONFIGS

FAST_ENSEMBLE = ["ensemble.trunk=[32,32]", "ensemble.head_hidden=32", "ensemble.fit_epochs=3", "ensemble.members=3", "ensemble.pretrain_epochs=3"]
TABLE = "package://nb201/cifar10.csv"
LOW_TABLE = "package://nb201/cifar10_12ep.csv"


def _benchmark_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("benchmark", overrides=[*FAST_ENSEMBLE, *overrides])


@pytest.fixture(scope="module")
def config() -> DictConfig:
    return _benchmark_config()


@pytest.fixture(scope="module")
def mf_config() -> DictConfig:
    return _benchmark_config("benchmark=nb201_mf")


@pytest.fixture(scope="module")
def zero_cost(nb201: NB201Space, config: DictConfig) -> ZeroCostData:
    return zero_cost_from_config(nb201, config.zero_cost)[0]


def _shuffled_unevaluated(values: torch.Tensor, evaluated: set[int], seed: int) -> torch.Tensor:
    """``values`` (``n`` or ``n x k``) with the rows outside ``evaluated`` permuted among themselves."""
    hidden = torch.tensor(sorted(set(range(values.shape[0])) - evaluated))
    shuffled = values.clone()
    shuffled[hidden] = values[hidden[torch.randperm(hidden.numel(), generator=torch.Generator().manual_seed(seed))]]
    moved = ~torch.isclose(shuffled[hidden], values[hidden], equal_nan=True)
    assert moved.float().mean() > 0.9  # the values the search never saw really moved
    return shuffled


def _proposals_unchanged(make: Callable[[TableObjective], Strategy], objective: TableObjective, budget: float) -> None:
    """Run ``make(objective)`` on ``objective`` and ``make(shuffled)`` on a copy whose
    unevaluated values (of each fidelity) are shuffled: the proposals must be the same.
    (An honest strategy ignores the argument; it is there so that a leaky one can be built.)"""
    space = objective.space
    first = run_search(make(objective), objective, budget=budget).trials
    shuffled = copy.copy(objective)
    seen = {fidelity: {int(space.index_of(torch.tensor([t.encoding]))[0]) for t in first if t.fidelity == fidelity} for fidelity in (HIGH_FIDELITY, LOW_FIDELITY)}
    shuffled.values = _shuffled_unevaluated(objective.values, seen[HIGH_FIDELITY], 0)
    if objective.low_values is not None:
        shuffled.low_values = _shuffled_unevaluated(objective.low_values, seen[LOW_FIDELITY], 1)
    second = run_search(make(shuffled), shuffled, budget=budget).trials
    assert len(first) >= 10 and second == first


@pytest.mark.parametrize(
    ("name", "budget"),
    [("random", 30), ("evolution", 40), ("local_search", 40), ("bo_no_pretraining", 30), ("bo", 30), ("optuna_tpe", 30)],
)
def test_single_objective_strategy_never_sees_an_unevaluated_value(name: str, budget: int, nb201: NB201Space, table: TableObjective, config: DictConfig, zero_cost: ZeroCostData) -> None:
    _proposals_unchanged(lambda _: instantiate_strategy(config.strategies[name], nb201, 3, zero_cost), table, budget)


def test_multi_fidelity_bo_never_sees_an_unevaluated_value_of_either_fidelity(nb201: NB201Space, mf_config: DictConfig, zero_cost: ZeroCostData) -> None:
    objective = TableObjective(nb201, TABLE, "test_acc", low_table=LOW_TABLE, low_fidelity_column="test_acc_12ep", low_fidelity_cost=0.06, low_fidelity_epochs=12)
    _proposals_unchanged(lambda _: instantiate_strategy(mf_config.strategies.bo_multifidelity, nb201, 3, zero_cost), objective, 3.0)


def test_model_based_hyperband_never_sees_an_unevaluated_value_of_either_fidelity(nb201: NB201Space, mf_config: DictConfig) -> None:
    import hydra

    from nas.strategies import ModelBasedHyperband

    objective = TableObjective(nb201, TABLE, "test_acc", low_table=LOW_TABLE, low_fidelity_column="test_acc_12ep", low_fidelity_cost=0.06, low_fidelity_epochs=12)
    schedule = hydra.utils.instantiate(mf_config.fidelity)
    _proposals_unchanged(lambda _: ModelBasedHyperband(nb201, hydra.utils.instantiate(mf_config.ensemble), schedule, seed=3, rungs="schedule", bracket_size=9, min_points=6), objective, 4.0)


@pytest.mark.parametrize("name", ["mobo", "nsga2"])
def test_front_strategy_never_sees_an_unevaluated_value(name: str, nb201: NB201Space, config: DictConfig, zero_cost: ZeroCostData) -> None:
    goals = Goals.parse(["test_acc:max", "flops_m:min"])
    columns = load_columns(nb201, [TABLE, "package://nb201/costs.csv"])
    truth = torch.stack([columns[n] for n in goals.columns], 1)

    def run(table: torch.Tensor) -> list[list[tuple[int, ...]]]:
        strategy = instantiate_front_strategy(config.multiobjective.strategies[name], nb201, 3, goals, None, zero_cost)
        proposals: list[list[tuple[int, ...]]] = []
        while sum(map(len, proposals)) < 30:
            encodings = strategy.ask(None)
            strategy.tell(encodings, table[nb201.index_of(torch.tensor(encodings, dtype=torch.long))].tolist())
            proposals.append(encodings)
        return proposals

    first = run(truth)
    evaluated = {int(i) for batch in first for i in nb201.index_of(torch.tensor(batch, dtype=torch.long))}
    assert run(_shuffled_unevaluated(truth, evaluated, 0)) == first


class _Peeking(Strategy):
    """A leaky strategy (the negative control): a "surrogate" that predicts exactly, because
    it reads the table it is handed, picking the best of 100 random unseen candidates."""

    def __init__(self, space: NB201Space, objective: TableObjective) -> None:
        super().__init__(space, 0)
        self.objective = objective

    def ask(self, n: int | None = None) -> list[tuple[int, ...]]:
        candidates = self.random_unseen(100)
        values = self.objective.values[self.space.index_of(torch.tensor(candidates, dtype=torch.long))]
        return self._mark_pending([candidates[int(torch.nan_to_num(values, nan=-1.0).argmax())]])


def test_the_check_catches_a_strategy_that_peeks(nb201: NB201Space, table: TableObjective) -> None:
    with pytest.raises(AssertionError):
        _proposals_unchanged(lambda objective: _Peeking(nb201, objective), table, 12)
