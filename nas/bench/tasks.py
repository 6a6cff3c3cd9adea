"""Several tasks of one surrogate benchmark, side by side: ``tasks=[…]`` (``benchmark=lcbench``).

Each task is a run of the multi-fidelity harness (:func:`nas.bench.multifidelity.run_mf_benchmark`)
with the objective's ``task`` set to it, in ``<output_dir>/task_<id>``, resumable as that
harness is. Values differ in scale from task to task (LCBench's validation accuracies span 30
to 99 %), so the tasks are compared in *normalised regret*,
``(best known - found) / (best known - worst known)``, where the best and worst known are the
extremes of ``regret_samples`` random configurations evaluated fully on that task (stated in the
report). A search that has evaluated nothing fully by a checkpoint counts as regret 1 there (a
miss at the budget is counted, not dropped). The output directory gets:

- ``regret.md``: per task and strategy, the mean ± standard error (over seeds) of the normalised
  regret after each of ``cost_checkpoints``; the mean over tasks, where each seed's regret is
  averaged over the tasks first, so that the standard error is over seeds; and the cost at which
  each strategy's mean regret first reaches what the reference strategy (``regret_reference``,
  mono-fidelity BO) has after the whole budget;
- ``regret.json``: the same numbers and each task's best and worst known values;
- ``regret.png``: mean normalised regret against cost, one line per strategy.
"""
from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from nas.bench.multifidelity import CostRecord, best_at, run_mf_benchmark
from nas.errors import NASError
from nas.spaces import space_from_config
from nas.stats import mean_se

log = logging.getLogger(__name__)


def task_config(cfg: DictConfig, task: Any) -> DictConfig:
    """``cfg`` for one task: the objective's ``task`` set, output in ``task_<id>``."""
    one = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(one):
        one.objective.task = task
        one.output_dir = str(Path(cfg.output_dir) / f"task_{task}")
        one.tasks = None
    return one


def known_extremes(cfg: DictConfig, samples: int, seed: int = 0) -> tuple[float, float]:
    """The best and worst full-fidelity value of ``samples`` random configurations of the
    task of ``cfg.objective`` (evaluated in one batch of the surrogate)."""
    space = space_from_config(cfg)
    objective = hydra.utils.instantiate(cfg.objective, space=space)
    values = objective.accuracy(space.sample(samples, torch.Generator().manual_seed(seed)), objective.fidelity.hi_epochs)
    values = values[torch.isfinite(values)]
    return float(values.max()), float(values.min())


def regret_of(record: CostRecord, cost: float, best: float, worst: float) -> float:
    """Normalised regret of what ``record``'s search returns after ``cost`` (1 before any full
    evaluation)."""
    value = best_at(record.best_by_cost, cost)
    return 1.0 if value is None else (best - value) / (best - worst)


def regret_rows(strategies: list[str], rows_of: dict[str, list[list[float]]], checkpoints: list[float]) -> list[str]:
    """A markdown table: per strategy, the mean ± SE over its rows (seeds) of the regret at each checkpoint."""
    lines = ["| Strategy | " + " | ".join(f"@{c:g}" for c in checkpoints) + " |", "|---" * (len(checkpoints) + 1) + "|"]
    for name in strategies:
        lines.append(f"| {name} | " + " | ".join(mean_se([row[i] for row in rows_of[name]], digits=4) for i in range(len(checkpoints))) + " |")
    return lines


def run_task_benchmark(cfg: DictConfig) -> dict[str, dict[str, list[CostRecord]]]:
    """Run the multi-fidelity benchmark on every task of ``cfg.tasks``; write the regret reports."""
    tasks = list(cfg.tasks)
    if not tasks:
        raise NASError("tasks is empty; give the benchmark's task ids, e.g. tasks=[3945,34539].")
    duplicate = next((t for t in tasks if tasks.count(t) > 1), None)
    if duplicate is not None:
        raise NASError(f"tasks lists {duplicate} twice; give each task once.")
    samples = int(cfg.get("regret_samples") or 100_000)
    # Every task's objective is built before anything runs: an unknown task stops here.
    extremes = {task: known_extremes(task_config(cfg, task), samples) for task in tasks}
    results = {task: run_mf_benchmark(task_config(cfg, task)) for task in tasks}
    output = Path(cfg.output_dir)
    checkpoints = [float(c) for c in cfg.cost_checkpoints]
    budget = float(cfg.budget)
    strategies = list(cfg.include)
    # regret[name][task] = per-seed regrets at each checkpoint
    regret = {
        name: {task: [[regret_of(r, c, *extremes[task]) for c in checkpoints] for r in results[task][name]] for task in tasks}
        for name in strategies
    }
    seeds = min(len(rows) for by_task in regret.values() for rows in by_task.values())
    averaged = {  # per seed, the mean over tasks at each checkpoint
        name: [[statistics.fmean(by_task[t][s][i] for t in tasks) for i in range(len(checkpoints))] for s in range(seeds)]
        for name, by_task in regret.items()
    }
    lines = [
        f"# Normalised regret over {len(tasks)} tasks ({seeds} seeds, budget {budget:g} equivalent full evaluations)",
        "",
        f"Regret = (best known - returned) / (best known - worst known), with the best and worst known of {samples:,} random "
        "configurations at the full fidelity on each task; a search with no full evaluation yet counts 1. Mean ± standard error over seeds; "
        "the mean over tasks averages each seed's regret over the tasks first.",
        "",
        "## Mean over tasks",
        "",
        *regret_rows(strategies, averaged, checkpoints),
    ]
    reference = cfg.get("regret_reference")
    if reference in strategies:
        lines += ["", *reach_lines(results, extremes, strategies, reference, budget)]
    for task in tasks:
        best, worst = extremes[task]
        lines += ["", f"## Task {task} (best known {best:.2f}, worst known {worst:.2f})", "", *regret_rows(strategies, {name: regret[name][task] for name in strategies}, checkpoints)]
    report = "\n".join(lines) + "\n"
    (output / "regret.md").write_text(report)
    (output / "regret.json").write_text(json.dumps({
        "tasks": tasks, "checkpoints": checkpoints, "regret_samples": samples,
        "known": {str(t): {"best": b, "worst": w} for t, (b, w) in extremes.items()},
        "mean_over_tasks": averaged, "per_task": {n: {str(t): rows for t, rows in by.items()} for n, by in regret.items()},
    }, indent=1))
    regret_plot(results, extremes, strategies, budget, output / "regret.png")
    print(report)
    print(f"Regret reports written to {output.resolve()}")
    return results


def mean_regret_curve(results: dict[Any, dict[str, list[CostRecord]]], extremes: dict[Any, tuple[float, float]], name: str, grid: list[float]) -> list[float]:
    """Mean normalised regret of strategy ``name`` over tasks and seeds at each cost of ``grid``."""
    return [
        statistics.fmean(regret_of(r, c, *extremes[task]) for task in results for r in results[task][name])
        for c in grid
    ]


def reach_lines(results: dict[Any, dict[str, list[CostRecord]]], extremes: dict[Any, tuple[float, float]], strategies: list[str], reference: str, budget: float) -> list[str]:
    """When each strategy's mean regret first reaches the ``reference``'s after the whole budget."""
    grid = [budget * (i + 1) / 400 for i in range(400)]
    target = mean_regret_curve(results, extremes, reference, [budget])[0]
    lines = [f"## Cost to reach {reference}'s mean regret after {budget:g} equivalents ({target:.4f})", "", "| Strategy | cost | share of the budget |", "|---|---|---|"]
    for name in strategies:
        curve = mean_regret_curve(results, extremes, name, grid)
        reached = next((c for c, v in zip(grid, curve) if v <= target + 1e-12), None)
        lines.append(f"| {name} | {reached:.1f} | {reached / budget:.2f} |" if reached is not None else f"| {name} | not within {budget:g} | – |")
    return lines


def regret_plot(results: dict[Any, dict[str, list[CostRecord]]], extremes: dict[Any, tuple[float, float]], strategies: list[str], budget: float, path: Path) -> None:
    """Mean normalised regret (log scale) against cost, one line per strategy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    grid = [budget * (i + 1) / 200 for i in range(200)]
    for name in strategies:
        ax.plot(grid, [max(v, 1e-4) for v in mean_regret_curve(results, extremes, name, grid)], label=name)
    ax.set_xlabel("cost (equivalent full evaluations)")
    ax.set_ylabel(f"mean normalised regret over {len(results)} tasks")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
