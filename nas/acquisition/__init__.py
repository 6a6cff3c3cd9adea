"""How a suggestion is chosen from the surrogate's predictions.

- :mod:`nas.acquisition.single`: one objective: probability and expectation of improvement,
  UCB, Thompson sampling, and diverse batches (the kriging believer); re-exported here;
- :mod:`nas.acquisition.multiobjective`: fronts: expected hypervolume improvement, ParEGO,
  probability of improving the front, feasibility;
- :mod:`nas.acquisition.pareto`: Pareto utilities (dominance, hypervolume, crowding);
- :mod:`nas.acquisition.goals`: what a search aims at: objectives, budgets, known costs.

Layer: the strategy's, with the surrogate; imports only the base layer and torch.
"""
from nas.acquisition.single import (
    ACQUISITION_NAMES,
    ACQUISITIONS,
    check_acquisition,
    expected_improvement,
    log_probability_of_improvement,
    predictive,
    probability_of_improvement,
    select_batch,
    upper_confidence_bound,
)

__all__ = [
    "ACQUISITIONS", "ACQUISITION_NAMES", "check_acquisition", "expected_improvement", "log_probability_of_improvement", "predictive",
    "probability_of_improvement", "select_batch", "upper_confidence_bound",
]
