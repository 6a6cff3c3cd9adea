"""Benchmark harness: N seeds x strategies on a lookup table (NAS-Bench-201 by default).

``python -m nas.benchmark seeds=20 budget=300`` writes, in the output directory:

- ``results.json``: per strategy, one record per seed (evaluations to reach the table
  optimum, best value after 100 / 200 evaluations, best-so-far trace, regret of the
  architecture the search would return at 50 / 100 / 200 evaluations, surrogate Spearman
  correlation with the truth at checkpoints and of the pretrained metric heads, timings);
- ``results.md``: the tables of thesis Table 5.3 (evaluations to the optimum) and 5.4
  (best value after 100 and 200 evaluations), plus Spearman correlations and timings;
- ``convergence.png``: regret to the optimum and Spearman correlation during the search;
- ``records.jsonl``: each (strategy, seed) result the moment it is finished
  (:mod:`nas.bench.journal`): a stopped benchmark keeps them, and the same command
  started again runs only what is missing.

Two protocols: the thesis' searches and reports the same column (``column=test_acc``);
the realistic one selects on validation accuracy and reports the test accuracy of the
architecture it would return (``column=val_acc report_column=test_acc``). The optimum to
reach is always the best value of ``report_column``, reached when the architecture with
the best ``column`` value so far has it.
"""
from __future__ import annotations

import json
import logging
import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from nas.bench.journal import Journal, task_fingerprint
from nas.cli import configure_threads
from nas.errors import NASError
from nas.fidelity import HIGH_FIDELITY
from nas.lifecycle import worker_pool
from nas.objectives.table import TableObjective
from nas.paths import resolve_path
from nas.progress import track_runs
from nas.report import convergence_plot, surrogate_rank_correlation
from nas.search import SearchHistory, run_search
from nas.space import SearchSpace
from nas.spaces import build_space
from nas.stats import mean_se, reach_cells, reach_table, seeds_mean_se, spearman
from nas.strategies import instantiate_strategy
from nas.costs.zero_cost import ZeroCostData, zero_cost_from_config

log = logging.getLogger(__name__)


@dataclass
class SeedRecord:
    """The outcome of one strategy on one seed."""

    seed: int
    evals_to_optimum: int | None
    best_at_100: float | None
    best_at_200: float | None
    best_so_far: list[float]
    spearman: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    median_ask_seconds: float = 0.0
    regret_at: dict[str, float] = field(default_factory=dict)
    metric_head_spearman: dict[str, float] = field(default_factory=dict)


#: The settings a (strategy, seed) result depends on besides its own (see nas.bench.journal).
RESULT_KEYS = ("budget", "searchspace", "table", "column", "report_column", "stop_at_optimum", "spearman_at", "zero_cost")

#: Evaluation counts at which the regret of the returned architecture is reported.
REGRET_AT = (50, 100, 200)


def returned_values(history: SearchHistory, objective: TableObjective, report: torch.Tensor) -> list[float]:
    """After each evaluation, the ``report`` value of the architecture the search would
    return: the one with the best searched value so far (``-inf`` before the first)."""
    best, returned, trace = float("-inf"), float("-inf"), []
    space = objective.space
    for trial, evaluation in zip(history.trials, history.evaluations):
        if evaluation.status == "ok" and trial.fidelity == HIGH_FIDELITY and evaluation.value > best:
            best = evaluation.value
            returned = float(report[int(space.index_of(torch.tensor([trial.encoding]))[0])])
        trace.append(returned)
    return trace


def metric_head_spearman(strategy: object, space: SearchSpace, truth: torch.Tensor) -> dict[str, float]:
    """Spearman correlation with ``truth`` over the space of each pretrained metric head's
    mean prediction (the surrogate after pretraining, before any observation)."""
    surrogate = getattr(strategy, "surrogate", None)
    heads = getattr(surrogate, "metric_heads", ())
    if not heads:
        return {}
    features = space.features(space.all_codes)
    ok = ~torch.isnan(truth)
    out = {}
    for head in heads:
        predicted = surrogate.ensemble.predict(features, head).mean(0).double()  # type: ignore[union-attr]
        out[head.removeprefix("metric:")] = spearman(predicted[ok].tolist(), truth[ok].tolist())
    return out


class _OptimumReached(Exception):
    """Raised by the batch callback to end a seed whose search can no longer improve."""


def run_one(task: dict[str, Any]) -> tuple[str, SeedRecord]:
    """Run one (strategy, seed) pair; a module-level function so worker processes can run it."""
    configure_threads(task["threads"])
    cfg = task["cfg"]
    space = build_space(**cfg.searchspace)
    objective = TableObjective(space, task["table"], cfg.column)
    report = _report_values(objective, task["table"], cfg)
    zero_cost = ZeroCostData.load(Path(task["zero_cost_path"]), space) if task["zero_cost_path"] else None
    started = time.perf_counter()
    strategy = instantiate_strategy(cfg.strategies[task["name"]], space, task["seed"], zero_cost)
    prior_rho = metric_head_spearman(strategy, space, report) if task["seed"] == int(cfg.first_seed) else {}
    checkpoints = sorted(int(c) for c in cfg.spearman_at)
    spearman: dict[str, float] = {}
    # Searching the reported column, nothing changes once its optimum is found: the rest
    # of the budget would only repeat the optimum in every trace (and cost minutes).
    stop_early = bool(cfg.get("stop_at_optimum", True)) and (cfg.get("report_column") or cfg.column) == cfg.column
    seen: list[SearchHistory] = []

    def on_batch(history: SearchHistory) -> None:
        if not seen:
            seen.append(history)
        if stop_early and max(history.best_so_far(), default=float("-inf")) >= objective.optimum - 1e-9:
            raise _OptimumReached
        while checkpoints and len(history.evaluations) >= checkpoints[0]:
            # Over the whole space: the benchmark knows the truth everywhere.
            rho = surrogate_rank_correlation(strategy, space.all_codes.tolist(), objective.values.tolist())
            if rho is not None:
                spearman[str(checkpoints[0])] = rho
            checkpoints.pop(0)

    try:
        history = run_search(strategy, objective, cfg.budget, on_batch=on_batch)
    except _OptimumReached:
        history = seen[0]
    trace = history.best_so_far()
    returned = returned_values(history, objective, report)
    if len(trace) < cfg.budget:  # stopped at the optimum (or the space ran out): it stays the best
        trace += trace[-1:] * (int(cfg.budget) - len(trace))
        returned += returned[-1:] * (int(cfg.budget) - len(returned))
    optimum = float(torch.nan_to_num(report, nan=-math.inf).max())
    reached = next((i + 1 for i, v in enumerate(returned) if v >= optimum - 1e-9), None)
    record = SeedRecord(
        seed=task["seed"],
        evals_to_optimum=reached,
        best_at_100=trace[99] if len(trace) >= 100 else None,
        best_at_200=trace[199] if len(trace) >= 200 else None,
        best_so_far=trace,
        spearman=spearman,
        wall_seconds=time.perf_counter() - started,
        median_ask_seconds=statistics.median(history.ask_seconds) if history.ask_seconds else 0.0,
        regret_at={str(n): optimum - returned[n - 1] for n in REGRET_AT if len(returned) >= n},
        metric_head_spearman=prior_rho,
    )
    log.info("%s seed %d: optimum after %s evaluations (%.1f s)", task["name"], task["seed"], reached, record.wall_seconds)
    return task["name"], record


def _report_values(objective: TableObjective, table: str, cfg: DictConfig) -> torch.Tensor:
    """The ``report_column`` values of every architecture (the searched ``objective``'s by default)."""
    column = cfg.get("report_column") or cfg.column
    return objective.values if column == objective.column else TableObjective(objective.space, table, column).values


def _mean_row(name: str, columns: list[list[float | None]], digits: int) -> str:
    """A markdown row: ``name``, then :func:`seeds_mean_se` of each column."""
    return f"| {name} | {' | '.join(seeds_mean_se(column, digits) for column in columns)} |"


def markdown_report(results: dict[str, list[SeedRecord]], budget: int, optimum: float, column: str, report_column: str | None = None) -> str:
    """Thesis Table 5.3 / 5.4 style tables, regrets, Spearman correlations and timings; every
    mean with its standard error over seeds, and a seed that misses the optimum counted at
    the budget."""
    report_column = report_column or column
    protocol = f"searched on {column}" + ("" if report_column == column else f", reported in {report_column}")
    heading = f"Evaluations to reach the optimum, {report_column} = {optimum:g}, {protocol}"
    lines = reach_table(heading, {name: [r.evals_to_optimum for r in records] for name, records in results.items()}, budget)
    lines += ["", "## Best value after 100 and 200 evaluations (mean ± standard error over seeds)", "", "| Strategy | 100 | 200 |", "|---|---|---|"]
    for name, records in results.items():
        lines.append(_mean_row(name, [[getattr(r, key) for r in records] for key in ("best_at_100", "best_at_200")], 4))
    lines += ["", f"## Regret of the returned architecture after 50 / 100 / 200 evaluations (mean ± standard error over seeds, {report_column})", ""]
    lines += ["| Strategy | 50 | 100 | 200 |", "|---|---|---|---|"]
    for name, records in results.items():
        lines.append(_mean_row(name, [[r.regret_at.get(str(n)) for r in records] for n in REGRET_AT], 3))
    with_prior = {n: rs[0].metric_head_spearman for n, rs in results.items() if rs and rs[0].metric_head_spearman}
    if with_prior:
        lines += ["", f"## Spearman correlation of the pretrained metric heads with {report_column} (first seed, before any observation)", ""]
        lines += ["| Strategy | " + " | ".join(f"{k}" for k in next(iter(with_prior.values()))) + " |"]
        lines += ["|---" * (len(next(iter(with_prior.values()))) + 1) + "|"]
        for name, rho in with_prior.items():
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in rho.values()) + " |")
    with_rho = {n: rs for n, rs in results.items() if any(r.spearman for r in rs)}
    if with_rho:
        points = sorted({int(k) for rs in with_rho.values() for r in rs for k in r.spearman})
        lines += ["", "## Surrogate Spearman correlation with the table over the whole space (mean ± standard error over seeds)", ""]
        lines += ["| Strategy | " + " | ".join(f"after {p}" for p in points) + " |", "|---" * (len(points) + 1) + "|"]
        for name, records in with_rho.items():
            lines.append(_mean_row(name, [[r.spearman.get(str(p)) for r in records] for p in points], 3))
    lines += ["", "## Search overhead", "", "| Strategy | Median time to choose a batch (s) | Mean wall time per seed (s) |", "|---|---|---|"]
    for name, records in results.items():
        lines.append(
            f"| {name} | {statistics.median(r.median_ask_seconds for r in records):.3f} | {statistics.fmean(r.wall_seconds for r in records):.1f} |"
        )
    return "\n".join(lines) + "\n"


#: Markers of the block of a README that ``readme=...`` rewrites with the summary table.
README_START = "<!-- nas.benchmark summary: start -->"
README_END = "<!-- nas.benchmark summary: end -->"


def summary_table(results: dict[str, list[SeedRecord]], payload: dict[str, Any]) -> str:
    """One compact markdown table: evaluations to the optimum (a miss counted at the budget)
    and the regret of the returned architecture, means with their standard errors."""
    budget = payload["budget"]
    column, report_column = payload["column"], payload.get("report_column") or payload["column"]
    protocol = f"`{column}`" if column == report_column else f"searched on `{column}`, reported in `{report_column}`"
    lines = [
        f"{len(next(iter(results.values())))} seeds, budget {budget}, {Path(payload['table']).name}, {protocol}, optimum {payload['optimum']:g}. "
        f"Means ± standard errors over seeds; a seed that never reaches the optimum counts as {budget} evaluations.",
        "",
        "| Strategy | Evaluations to the optimum (miss = budget) | Seeds reaching it | Mean over the seeds reaching it (range) | Regret after 50 / 100 / 200 |",
        "|---|---|---|---|---|",
    ]
    for name, records in results.items():
        regrets = [mean_se([r.regret_at.get(str(n)) for r in records], 3) for n in REGRET_AT]
        lines.append(f"| {name} | " + " | ".join(reach_cells([r.evals_to_optimum for r in records], budget)) + f" | {' / '.join(regrets)} |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> None:
    """Replace the block between :data:`README_START` and :data:`README_END` of ``readme``."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise NASError(f"{readme} has no block between {README_START!r} and {README_END!r} to replace.")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")


def load_results(path: Path) -> tuple[dict[str, Any], dict[str, list[SeedRecord]]]:
    """The payload of a ``results.json`` and its records per strategy."""
    try:
        payload = json.loads(Path(path).read_text())
        results = {name: [SeedRecord(**r) for r in records] for name, records in payload["strategies"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NASError(f"{path} is not a results.json written by nas.benchmark ({exc}).") from None
    return payload, results


def write_reports(output: Path, results: dict[str, list[SeedRecord]], payload: dict[str, Any]) -> str:
    """``results.json``, ``results.md`` and ``convergence.png`` of a set of results."""
    output.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "strategies": {name: [asdict(r) for r in records] for name, records in results.items()}}
    (output / "results.json").write_text(json.dumps(payload, indent=1))
    report = markdown_report(results, payload["budget"], payload["optimum"], payload["column"], payload.get("report_column"))
    report += f"\n{payload.get('note', '')}\n"
    (output / "results.md").write_text(report)
    convergence_plot(results, payload["optimum"], output / "convergence.png")
    summary = summary_table(results, payload)
    (output / "summary.md").write_text(summary)
    readme = (payload.get("config") or {}).get("readme")
    if readme:
        update_readme(Path(readme), summary)
    return report


def merge_benchmarks(sources: list[str], output: Path, readme: str | None = None) -> dict[str, list[SeedRecord]]:
    """Report the strategies of several ``nas.benchmark`` runs on the same table side by side."""
    merged: dict[str, list[SeedRecord]] = {}
    first: dict[str, Any] | None = None
    notes = []
    for source in sources:
        payload, results = load_results(Path(source) / "results.json")
        if first is None:
            first = payload
        elif (payload["table"], payload["column"], payload.get("report_column"), payload["budget"]) != (first["table"], first["column"], first.get("report_column"), first["budget"]):
            raise NASError(f"{source} benchmarks another table, column or budget than {sources[0]}; only like runs can be merged.")
        merged.update(results)
        notes.append(f"{source}: {', '.join(results)} ({payload['wall_seconds']:.0f} s)")
    assert first is not None
    report = write_reports(output, merged, {**first, "config": {"merged_from": sources, "readme": readme}, "note": "Merged from " + "; ".join(notes) + "."})
    print(report)
    return merged


def run_tabular_benchmark(cfg: DictConfig) -> dict[str, list[SeedRecord]]:
    """Run every selected strategy on every seed of the table and write the reports to ``cfg.output_dir``."""
    if cfg.budget <= 0:
        raise NASError(f"The budget must be a positive number of evaluations, got {cfg.budget}.")
    if cfg.seeds <= 0:
        raise NASError(f"The number of seeds must be positive, got {cfg.seeds}.")
    unknown = [name for name in cfg.include if name not in cfg.strategies]
    if unknown:
        raise NASError(f"Unknown strategy {unknown[0]!r}; valid strategies are {', '.join(cfg.strategies)}.")
    table = resolve_path(cfg.table)
    space = build_space(**cfg.searchspace)
    objective = TableObjective(space, table, cfg.column)  # validates the table before any work starts
    report_values = _report_values(objective, str(table), cfg)
    optimum = float(torch.nan_to_num(report_values, nan=-math.inf).max())
    output = Path(cfg.output_dir)
    needs_zero_cost = any(cfg.strategies[n].get("pretraining", "none") != "none" for n in cfg.include)
    zero_cost_path = ""
    if needs_zero_cost:
        # Computed once here; worker processes load the cached file.
        zero_cost_path = str(zero_cost_from_config(space, cfg.zero_cost)[1])
    workers = max(1, int(cfg.workers))
    # Seeds are the outer loop so that partial results cover every strategy evenly.
    tasks = [
        {"cfg": cfg, "name": name, "seed": int(cfg.first_seed) + s, "table": str(table), "zero_cost_path": zero_cost_path, "threads": cfg.threads_per_worker}
        for s in range(cfg.seeds)
        for name in cfg.include
    ]
    output.mkdir(parents=True, exist_ok=True)
    journal = Journal(output, {name: task_fingerprint(cfg, name, RESULT_KEYS) for name in cfg.include})
    results, done = journal.read(SeedRecord, range(int(cfg.first_seed), int(cfg.first_seed) + int(cfg.seeds)))
    tasks = [task for task in tasks if (task["name"], task["seed"]) not in done]
    if done:
        log.info("%d (strategy, seed) results read back from %s; %d to run", len(done), journal.path, len(tasks))
    started = time.perf_counter()
    with worker_pool(workers) if workers > 1 and tasks else nullcontext() as pool:
        outcomes = pool.imap_unordered(run_one, tasks) if pool is not None else map(run_one, tasks)
        for name, record in track_runs(outcomes, len(tasks)):
            results[name].append(record)
            journal.append(name, record)
    elapsed = time.perf_counter() - started
    for records in results.values():
        records.sort(key=lambda r: r.seed)
    payload = {
        "table": str(table),
        "column": cfg.column,
        "report_column": cfg.get("report_column") or cfg.column,
        "optimum": optimum,
        "budget": cfg.budget,
        "seeds": cfg.seeds,
        "wall_seconds": elapsed,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "note": f"Total wall time: {elapsed:.0f} s with {workers} worker process(es)" + (f", {len(done)} (strategy, seed) results read back." if done else "."),
    }
    print(write_reports(output, results, payload))
    print(f"Results written to {output.resolve()}")
    return results
