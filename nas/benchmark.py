"""Benchmark harness: N seeds x strategies on a lookup table (NAS-Bench-201 by default).

``python -m nas.benchmark seeds=20 budget=300`` writes, in the output directory:

- ``results.json``: per strategy, one record per seed (evaluations to reach the table
  optimum, best value after 100 / 200 evaluations, best-so-far trace, surrogate
  Spearman correlation with the truth at checkpoints, timings);
- ``results.md``: the tables of thesis Table 5.3 (evaluations to the optimum) and 5.4
  (best value after 100 and 200 evaluations), plus Spearman correlations and timings;
- ``convergence.png``: regret to the optimum and Spearman correlation during the search.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from nas.cli import configure_threads, user_errors
from nas.errors import NASError
from nas.objectives.table import TableObjective
from nas.paths import resolve_path
from nas.report import convergence_plot, surrogate_rank_correlation
from nas.search import SearchHistory, run_search
from nas.spaces import build_space
from nas.strategies import instantiate_strategy
from nas.zero_cost import ZeroCostData, zero_cost_from_config

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


def run_one(task: dict[str, Any]) -> tuple[str, SeedRecord]:
    """Run one (strategy, seed) pair; a module-level function so worker processes can run it."""
    configure_threads(task["threads"])
    cfg = task["cfg"]
    space = build_space(**cfg.searchspace)
    objective = TableObjective(space, task["table"], cfg.column)
    zero_cost = ZeroCostData.load(Path(task["zero_cost_path"]), space) if task["zero_cost_path"] else None
    started = time.perf_counter()
    strategy = instantiate_strategy(cfg.strategies[task["name"]], space, task["seed"], zero_cost)
    checkpoints = sorted(int(c) for c in cfg.spearman_at)
    spearman: dict[str, float] = {}

    def on_batch(history: SearchHistory) -> None:
        while checkpoints and len(history.evaluations) >= checkpoints[0]:
            # Over the whole space: the benchmark knows the truth everywhere.
            rho = surrogate_rank_correlation(strategy, space.all_codes.tolist(), objective.values.tolist())
            if rho is not None:
                spearman[str(checkpoints[0])] = rho
            checkpoints.pop(0)

    history = run_search(strategy, objective, cfg.budget, on_batch=on_batch)
    trace = history.best_so_far()
    reached = next((i + 1 for i, v in enumerate(trace) if v >= objective.optimum - 1e-9), None)
    record = SeedRecord(
        seed=task["seed"],
        evals_to_optimum=reached,
        best_at_100=trace[99] if len(trace) >= 100 else None,
        best_at_200=trace[199] if len(trace) >= 200 else None,
        best_so_far=trace,
        spearman=spearman,
        wall_seconds=time.perf_counter() - started,
        median_ask_seconds=statistics.median(history.ask_seconds) if history.ask_seconds else 0.0,
    )
    log.info("%s seed %d: optimum after %s evaluations (%.1f s)", task["name"], task["seed"], reached, record.wall_seconds)
    return task["name"], record


def _stats(values: list[float]) -> tuple[float, float, float, float]:
    return min(values), max(values), statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def markdown_report(results: dict[str, list[SeedRecord]], budget: int, optimum: float, column: str) -> str:
    """Thesis Table 5.3 / 5.4 style tables, Spearman correlations and timings."""
    lines = [
        f"## Evaluations to reach the optimum ({column} = {optimum:g})",
        "",
        f"| Strategy | Min | Max | Mean | Std | Reached | Mean (miss = {budget}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, records in results.items():
        hits = [r.evals_to_optimum for r in records if r.evals_to_optimum is not None]
        counted = [r.evals_to_optimum if r.evals_to_optimum is not None else budget for r in records]
        if hits:
            lo, hi, mean, std = _stats([float(h) for h in hits])
            cells = f"{lo:.0f} | {hi:.0f} | {mean:.1f} | {std:.2f}"
        else:
            cells = "– | – | – | –"
        lines.append(f"| {name} | {cells} | {len(hits)}/{len(records)} | {statistics.fmean(counted):.1f} |")
    lines += ["", "## Best value after 100 and 200 evaluations (mean over seeds)", "", "| Strategy | 100 | 200 |", "|---|---|---|"]
    for name, records in results.items():
        cells = []
        for key in ("best_at_100", "best_at_200"):
            values = [getattr(r, key) for r in records if getattr(r, key) is not None]
            cells.append(f"{statistics.fmean(values):.4f}" if values else "–")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    with_rho = {n: rs for n, rs in results.items() if any(r.spearman for r in rs)}
    if with_rho:
        points = sorted({int(k) for rs in with_rho.values() for r in rs for k in r.spearman})
        lines += ["", "## Surrogate Spearman correlation with the table over the whole space (mean over seeds)", ""]
        lines += ["| Strategy | " + " | ".join(f"after {p}" for p in points) + " |", "|---" * (len(points) + 1) + "|"]
        for name, records in with_rho.items():
            cells = []
            for p in points:
                values = [r.spearman[str(p)] for r in records if str(p) in r.spearman]
                cells.append(f"{statistics.fmean(values):.3f}" if values else "–")
            lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", "## Search overhead", "", "| Strategy | Median time to choose a batch (s) | Mean wall time per seed (s) |", "|---|---|---|"]
    for name, records in results.items():
        lines.append(
            f"| {name} | {statistics.median(r.median_ask_seconds for r in records):.3f} | {statistics.fmean(r.wall_seconds for r in records):.1f} |"
        )
    return "\n".join(lines) + "\n"


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
    report = markdown_report(results, payload["budget"], payload["optimum"], payload["column"])
    report += f"\n{payload.get('note', '')}\n"
    (output / "results.md").write_text(report)
    convergence_plot(results, payload["optimum"], output / "convergence.png")
    return report


def merge_benchmarks(sources: list[str], output: Path) -> dict[str, list[SeedRecord]]:
    """Report the strategies of several ``nas.benchmark`` runs on the same table side by side."""
    merged: dict[str, list[SeedRecord]] = {}
    first: dict[str, Any] | None = None
    notes = []
    for source in sources:
        payload, results = load_results(Path(source) / "results.json")
        if first is None:
            first = payload
        elif (payload["table"], payload["column"], payload["budget"]) != (first["table"], first["column"], first["budget"]):
            raise NASError(f"{source} benchmarks another table, column or budget than {sources[0]}; only like runs can be merged.")
        merged.update(results)
        notes.append(f"{source}: {', '.join(results)} ({payload['wall_seconds']:.0f} s)")
    assert first is not None
    report = write_reports(output, merged, {**first, "config": {"merged_from": sources}, "note": "Merged from " + "; ".join(notes) + "."})
    print(report)
    return merged


def run_benchmark(cfg: DictConfig) -> dict[str, list[SeedRecord]]:
    """Run every selected strategy on every seed and write the reports to ``cfg.output_dir``."""
    if cfg.get("merge"):
        return merge_benchmarks(list(cfg.merge), Path(cfg.output_dir))
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
    started = time.perf_counter()
    results: dict[str, list[SeedRecord]] = {name: [] for name in cfg.include}
    if workers == 1:
        outcomes = map(run_one, tasks)
        for name, record in outcomes:
            results[name].append(record)
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for name, record in pool.imap_unordered(run_one, tasks):
                results[name].append(record)
    elapsed = time.perf_counter() - started
    for records in results.values():
        records.sort(key=lambda r: r.seed)
    payload = {
        "table": str(table),
        "column": cfg.column,
        "optimum": objective.optimum,
        "budget": cfg.budget,
        "seeds": cfg.seeds,
        "wall_seconds": elapsed,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "note": f"Total wall time: {elapsed:.0f} s with {workers} worker process(es).",
    }
    print(write_reports(output, results, payload))
    print(f"Results written to {output.resolve()}")
    return results


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run_benchmark(cfg)


if __name__ == "__main__":
    main()
