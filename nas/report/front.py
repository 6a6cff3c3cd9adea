"""The result of a search with several objectives or budgets: its Pareto front.

A front is read from evaluation records (their ``metrics`` hold every goal column, see
:class:`nas.objectives.costs.CostAwareObjective`), so the store, ``summary.json``, the
plot and the final print all say the same thing.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from nas.acquisition.goals import Goals
from nas.acquisition.pareto import non_dominated
from nas.fidelity import HIGH_FIDELITY
from nas.report.records import EvaluationRecord, new_figure, save_figure

FRONT_PNG = "front.png"


def _goal_values(record: EvaluationRecord, goals: Goals) -> list[float]:
    return [float(record.metrics.get(name, math.nan)) for name in goals.columns]


def front_of(records: Sequence[EvaluationRecord], goals: Goals) -> list[dict[str, object]]:
    """The feasible, non-dominated full evaluations: one dict per architecture
    (``architecture``, then every goal column), best first objective first."""
    done = [r for r in records if r.status == "ok" and r.fidelity == HIGH_FIDELITY]
    if not done:
        return []
    values = torch.tensor([_goal_values(r, goals) for r in done], dtype=torch.float64)
    feasible = goals.feasible({name: values[:, j] for j, name in enumerate(goals.columns)}) & ~torch.isnan(values).any(1)
    index = torch.nonzero(feasible).flatten()
    if index.numel() == 0:
        return []
    points = goals.oriented(values[index, : len(goals.objectives)])
    on_front = index[non_dominated(points)].tolist()
    rows = [{"architecture": done[i].encoding, **dict(zip(goals.columns, values[i].tolist()))} for i in on_front]
    first = goals.objectives[0]
    return sorted(rows, key=lambda row: -first.sign * float(row[first.name]))  # type: ignore[arg-type]


def front_table(front: Sequence[dict[str, object]], goals: Goals) -> str:
    """The front as a small plain-text table: the goal columns, then the architecture."""
    header = [*goals.columns, "architecture"]
    lines = [" | ".join(header), " | ".join("-" * len(h) for h in header)]
    for row in front:
        lines.append(" | ".join([*(f"{float(row[c]):.4g}" for c in goals.columns), str(row["architecture"])]))  # type: ignore[arg-type]
    return "\n".join(lines)


def front_plot(records: Sequence[EvaluationRecord], goals: Goals, path: Path) -> Path | None:
    """The first two objectives of every full evaluation, the front highlighted; ``None``
    with fewer than two objectives or no success."""
    if len(goals.objectives) < 2:
        return None
    done = [r for r in records if r.status == "ok" and r.fidelity == HIGH_FIDELITY]
    if not done:
        return None
    x_name, y_name = goals.objectives[1].name, goals.objectives[0].name
    figure, (ax,) = new_figure()
    ax.scatter([r.metrics.get(x_name, math.nan) for r in done], [r.metrics.get(y_name, math.nan) for r in done], s=12, alpha=0.5, label="evaluated")
    front = sorted(front_of(records, goals), key=lambda row: float(row[x_name]))  # type: ignore[arg-type]
    if front:
        ax.plot([row[x_name] for row in front], [row[y_name] for row in front], marker="o", color="black", drawstyle="steps-post", label="Pareto front")
    ax.set(xlabel=f"{x_name} ({goals.objectives[1].direction})", ylabel=f"{y_name} ({goals.objectives[0].direction})", title=f"Front after {len(done)} evaluations")
    return save_figure(figure, [ax], path)
