"""Objectives: what an evaluation of an architecture measures."""
from nas.objectives.base import Evaluation, Objective
from nas.objectives.surrogate_benchmark import SurrogateBenchmarkObjective
from nas.objectives.table import TableObjective

__all__ = ["Evaluation", "Objective", "SurrogateBenchmarkObjective", "TableObjective"]
