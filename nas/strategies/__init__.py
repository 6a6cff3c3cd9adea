"""Search strategies behind one ask/tell interface.

Layer: the strategy's (with :mod:`nas.surrogate` and :mod:`nas.acquisition`); imports the
space, the costs and the base layer, never an objective, the search loop or a report
(see ARCHITECTURE.md).
"""
from __future__ import annotations

from typing import Any

from nas.errors import NASError
from nas.space import SearchSpace
from nas.strategies.base import Strategy
from nas.strategies.baselines import LocalSearch, RandomSearch, RegularizedEvolution
from nas.strategies.bo import BayesianOptimization
from nas.strategies.bohb import ModelBasedHyperband
from nas.strategies.hyperband import Hyperband, SuccessiveHalving
from nas.strategies.multifidelity import MultiFidelityBO, MultiFidelityStrategy
from nas.costs.zero_cost import ZeroCostData

__all__ = ["Strategy", "RandomSearch", "RegularizedEvolution", "LocalSearch", "BayesianOptimization", "instantiate_strategy"]
__all__ += ["Hyperband", "ModelBasedHyperband", "MultiFidelityBO", "MultiFidelityStrategy", "SuccessiveHalving"]


def instantiate_strategy(cfg: Any, space: SearchSpace, seed: int, zero_cost: ZeroCostData | None = None) -> Strategy:
    """Build a strategy from its config (a ``strategy`` group node) for one seed.

    Strategies that pretrain a surrogate are pretrained on ``zero_cost`` here, so that
    every caller gets a strategy ready to ``ask``.
    """
    import hydra

    strategy: Strategy = hydra.utils.instantiate(cfg, space=space, seed=seed)
    if getattr(strategy, "needs_zero_cost", False):
        if zero_cost is None:
            raise NASError("This strategy pretrains its surrogate on zero-cost metrics, but none were given.")
        strategy.pretrain(zero_cost)  # type: ignore[attr-defined]
    return strategy
