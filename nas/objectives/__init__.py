"""Objectives: what an evaluation of an architecture measures (a table, a surrogate
benchmark, real training through :mod:`nas.train`).

Layer: the objective's; imports the strategy layer's goals, the costs, the space and the
base layer, never the search loop or a report (see ARCHITECTURE.md).
"""
from nas.objectives.base import Evaluation, Objective
from nas.objectives.surrogate_benchmark import SurrogateBenchmarkObjective
from nas.objectives.table import TableObjective

__all__ = ["Evaluation", "Objective", "SurrogateBenchmarkObjective", "TableObjective"]
