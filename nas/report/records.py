"""The plots of a search, written as PNG files: one place for every figure the package draws.

A search's report is drawn from plain :class:`EvaluationRecord` objects, so it can be
rebuilt at any time from the run directory's store, without the search in memory:

- ``best_so_far.png``: best full-evaluation value against cost (equivalent full evaluations);
- ``accuracy_vs_latency.png``: objective against measured latency, when latency is known;
- ``surrogate_spearman.png``: the surrogate's rank correlation on evaluated architectures.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``), so drawing a report
never switches the backend of an interactive session nor leaks open figures.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from nas.fidelity import HIGH_FIDELITY
from nas.stats import spearman
from nas.trial import PRUNED

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from nas.objectives.base import Evaluation
    from nas.space import Encoding
    from nas.strategies.base import Strategy

#: The metric, in ``Evaluation.metrics``, that places an architecture on the latency axis.
LATENCY_METRIC = "latency_ms"

#: ``(x, y)`` of one point of a plot.
Point = tuple[float, float]

BEST_SO_FAR_PNG = "best_so_far.png"
ACCURACY_LATENCY_PNG = "accuracy_vs_latency.png"
SPEARMAN_PNG = "surrogate_spearman.png"


@dataclass
class EvaluationRecord:
    """One finished evaluation of a search, as reports and loggers see it.

    Attributes:
        index: position of the evaluation in the search, from 0.
        encoding: the architecture, as written by ``SearchSpace.to_string``.
        fidelity: ``"hi"`` for a full evaluation, ``"lo"`` for a cheap one.
        status: ``"ok"``, ``"failed"`` or ``"pruned"``.
        value: the objective (larger is better); ``NaN`` when the evaluation failed.
        cost: cost in equivalent full evaluations.
        metrics: anything else measured (latency, parameters, per-epoch accuracies, ...).
        error: why the evaluation failed.
        seconds: wall-clock time of the evaluation.
    """

    index: int
    encoding: str
    fidelity: str = HIGH_FIDELITY
    status: str = "ok"
    value: float = math.nan
    cost: float = 1.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    @classmethod
    def from_evaluation(cls, index: int, encoding: str, fidelity: str, evaluation: Evaluation, seconds: float = 0.0) -> EvaluationRecord:
        """The record of an objective's :class:`~nas.objectives.base.Evaluation`."""
        return cls(
            index=index,
            encoding=encoding,
            fidelity=fidelity,
            status=evaluation.status,
            value=float(evaluation.value),
            cost=float(evaluation.cost),
            metrics=dict(evaluation.metrics),
            error=evaluation.error,
            seconds=float(seconds),
        )

    @property
    def competes(self) -> bool:
        """Whether this evaluation competes for the best architecture (successful and full)."""
        return self.status == "ok" and self.fidelity == HIGH_FIDELITY and math.isfinite(self.value)

    @property
    def latency_ms(self) -> float | None:
        latency = self.metrics.get(LATENCY_METRIC)
        return float(latency) if isinstance(latency, (int, float)) and math.isfinite(latency) else None


def best_so_far(records: Sequence[EvaluationRecord]) -> list[float]:
    """Best successful full-evaluation value after each record (``-inf`` before the first)."""
    best, trace = -math.inf, []
    for record in records:
        if record.competes and record.value > best:
            best = record.value
        trace.append(best)
    return trace


def cumulative_cost(records: Sequence[EvaluationRecord]) -> list[float]:
    """Cost spent, in equivalent full evaluations, after each record."""
    total, trace = 0.0, []
    for record in records:
        total += record.cost
        trace.append(total)
    return trace


def best_record(records: Sequence[EvaluationRecord]) -> EvaluationRecord | None:
    """The best successful full evaluation; the earliest one wins a tie."""
    counted = [r for r in records if r.competes]
    return max(counted, key=lambda r: (r.value, -r.index)) if counted else None


def surrogate_rank_correlation(strategy: Strategy, encodings: Sequence[Encoding], values: Sequence[float]) -> float | None:
    """Spearman correlation between the strategy's mean prediction and the observed values.

    Computed on the successfully evaluated architectures only: in a real search the truth
    elsewhere is unknown. ``None`` when the strategy has no model yet, when fewer than three
    values are known, or when either side is constant (the correlation is undefined).
    """
    known = [(tuple(e), v) for e, v in zip(encodings, values) if math.isfinite(v)]
    if len(known) < 3:
        return None
    prediction = strategy.predict(torch.tensor([e for e, _ in known], dtype=torch.long))
    if prediction is None:
        return None
    rho = spearman(prediction.detach().double().tolist(), [v for _, v in known])
    return rho if math.isfinite(rho) else None



def new_figure(width: float = 6.4, height: float = 4.5, columns: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure of ``columns`` axes side by side, drawn without a display (every report's PNGs)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def save_figure(figure: Figure, axes: Sequence[Axes], path: Path) -> Path:
    """Write ``figure`` to ``path`` as a PNG, with the reports' common styling of ``axes``."""
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path



def _successes(records: Sequence[EvaluationRecord], xs: Sequence[float | None]) -> tuple[list[Point], list[Point]]:
    """``(x, value)`` of the successful full and low-fidelity evaluations that have an ``x``."""
    full: list[Point] = []
    cheap: list[Point] = []
    for x, record in zip(xs, records):
        if x is not None and record.status == "ok" and math.isfinite(record.value):
            (full if record.fidelity == HIGH_FIDELITY else cheap).append((x, record.value))
    return full, cheap


def _scatter_by_fidelity(ax: Axes, full: list[Point], cheap: list[Point]) -> None:
    if cheap:
        ax.scatter(*zip(*cheap), s=14, alpha=0.4, marker="^", color="tab:orange", label="low-fidelity evaluation")
    if full:
        ax.scatter(*zip(*full), s=14, alpha=0.5, color="tab:blue", label="full evaluation")


def best_so_far_plot(records: Sequence[EvaluationRecord], path: Path) -> Path | None:
    """Every evaluated value and the best-so-far curve against cost; ``None`` before any success."""
    costs, trace = cumulative_cost(records), best_so_far(records)
    steps = [(c, b) for c, b in zip(costs, trace) if math.isfinite(b)]
    if not steps:
        return None
    full, cheap = _successes(records, costs)
    figure, (ax,) = new_figure()
    _scatter_by_fidelity(ax, full, cheap)
    failed = [c for c, r in zip(costs, records) if r.status == "failed"]
    if failed:
        # Failures have no value; a rug on the lower edge shows where the budget went.
        ax.plot(failed, [0.0] * len(failed), "|", color="tab:red", markersize=12, transform=ax.get_xaxis_transform(), label="failed")
    pruned = [(c, r.value) for c, r in zip(costs, records) if r.status == PRUNED and math.isfinite(r.value)]
    if pruned:
        ax.scatter(*zip(*pruned), s=14, marker="x", alpha=0.5, color="tab:gray", label="pruned (value when stopped)")
    # The curve holds its level until the budget ends, so the last improvement stays visible.
    xs, ys = zip(*steps)
    ax.step([*xs, costs[-1]], [*ys, ys[-1]], where="post", color="black", linewidth=1.8, label="best so far")
    ax.set(xlabel="cost (equivalent full evaluations)", ylabel="objective value", title="Best architecture so far")
    return save_figure(figure, [ax], path)


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The ``(latency, value)`` points no other point beats on both (lower latency, higher value)."""
    front: list[Point] = []
    for latency, value in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or value > front[-1][1]:
            front.append((latency, value))
    return front


def accuracy_latency_plot(records: Sequence[EvaluationRecord], path: Path) -> Path | None:
    """Objective against latency of successful evaluations; ``None`` when no latency is known."""
    full, cheap = _successes(records, [r.latency_ms for r in records])
    if not full and not cheap:
        return None
    figure, (ax,) = new_figure()
    _scatter_by_fidelity(ax, full, cheap)
    if full:
        ax.step(*zip(*pareto_front(full)), where="post", color="black", linewidth=1.2, label="Pareto front")
    ax.set(xlabel="latency (ms)", ylabel="objective value", title="Objective against latency")
    return save_figure(figure, [ax], path)


def spearman_plot(points: Sequence[tuple[int, float]], path: Path) -> Path | None:
    """The surrogate's rank correlation against the number of evaluations; ``None`` without points."""
    finite = sorted((n, rho) for n, rho in points if math.isfinite(rho))
    if not finite:
        return None
    figure, (ax,) = new_figure()
    ax.plot(*zip(*finite), marker="o")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="evaluations", ylabel="Spearman ρ on evaluated architectures", ylim=(-1.05, 1.05), title="Surrogate rank correlation")
    return save_figure(figure, [ax], path)


def write_report(run_dir: str | Path, records: Sequence[EvaluationRecord], spearman_points: Sequence[tuple[int, float]] = ()) -> list[Path]:
    """Write the search's PNG plots into ``run_dir``; returns the files written.

    A plot with nothing to show (no success yet, no latency measured, no surrogate) is
    skipped rather than drawn empty.
    """
    run_dir = Path(run_dir)
    written = [
        best_so_far_plot(records, run_dir / BEST_SO_FAR_PNG),
        accuracy_latency_plot(records, run_dir / ACCURACY_LATENCY_PNG),
        spearman_plot(spearman_points, run_dir / SPEARMAN_PNG),
    ]
    return [path for path in written if path is not None]


class SeedTrace(Protocol):
    """What the benchmark's convergence plot needs of one (strategy, seed) run."""

    best_so_far: list[float]
    spearman: dict[str, float]


def convergence_plot(results: Mapping[str, Sequence[SeedTrace]], optimum: float, path: Path) -> None:
    """Benchmark figure: mean regret (optimum - best so far) against evaluations, and Spearman correlations."""
    figure, (ax_regret, ax_rho) = new_figure(12, 4.5, columns=2)
    for name, records in results.items():
        length = min(len(r.best_so_far) for r in records)
        trace = torch.tensor([r.best_so_far[:length] for r in records], dtype=torch.float64)
        regret = (optimum - trace).clamp(min=1e-3).mean(0)
        ax_regret.plot(range(1, length + 1), regret.numpy(), label=name)
        points = sorted({int(k) for r in records for k in r.spearman})
        if points:
            means = [statistics.fmean(r.spearman[str(p)] for r in records if str(p) in r.spearman) for p in points]
            ax_rho.plot(points, means, marker="o", label=name)
    ax_regret.set(xlabel="evaluations", ylabel="mean regret to the optimum (floored at 1e-3)", yscale="log", title="Convergence")
    ax_rho.set(xlabel="evaluations", ylabel="Spearman ρ over the whole space", title="Surrogate rank correlation")
    save_figure(figure, [ax_regret, ax_rho], path)



def median_value(records: Sequence[EvaluationRecord]) -> float | None:
    """Median value of the successful full evaluations (the typical candidate); ``None`` without any."""
    values = [r.value for r in records if r.competes]
    return statistics.median(values) if values else None


def search_gain_lines(best: EvaluationRecord, records: Sequence[EvaluationRecord], reference: tuple[str, float] | None = None) -> list[str]:
    """What searching bought: the winner against the median candidate and, when given, a reference.

    ``reference`` is ``(architecture, value)`` of a well-known architecture of the space,
    evaluated like every candidate.
    """
    lines = []
    median = median_value(records)
    if median is not None:
        lines.append(f"  median candidate: {median:.4f} ({best.value - median:+.2f} for the winner, over {sum(r.competes for r in records)} candidates)")
    if reference is not None:
        architecture, value = reference
        lines.append(f"  reference {architecture}: {value:.4f} ({best.value - value:+.2f} for the winner)")
    return lines
