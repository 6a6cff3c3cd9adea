"""Multi-fidelity benchmark harness: N seeds x strategies on an objective with an epoch
fidelity (NAS-Bench-301's surrogate by default), with traces and budgets in cost.

``python -m nas.benchmark benchmark=nb301`` runs it. Cost is counted in *equivalent full
evaluations* (epochs run / epochs of a full evaluation, a continued run paying only its
extra epochs), and a search is judged by the best *full-fidelity* value it has evaluated.
The output directory gets:

- ``results.json``: per strategy and seed, ``best_by_cost`` (``[cost, best full value]``
  each time the best improves, and at the end), the best value after each of
  ``cost_checkpoints`` equivalents, the cost to reach ``target``, counts and timings;
- ``results.md``: the mean ± standard error of the best value at each checkpoint, the cost
  to reach the target, and timings;
- ``convergence.png``: mean best full-fidelity value against cost, with standard errors;
- ``records.jsonl``: each (strategy, seed) result the moment it is finished, so that the
  same command started again after an interruption runs only the missing ones.

With ``agreement_epochs`` set and an objective that predicts any architecture at any epoch
(a surrogate benchmark), the report opens with how far each fidelity ranks like the full
one (:func:`fidelity_agreement`): what any multi-fidelity strategy can gain on it.

Strategies are the framework's (``strategies``, any ``nas.strategies`` config) and the
external peers of :mod:`nas.bench.mf_peers` (``peers``), side by side on the same objective.
"""
from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from nas.bench.journal import Journal, task_fingerprint
from nas.cli import configure_threads
from nas.errors import NASError
from nas.lifecycle import worker_pool
from nas.bench.mf_peers import NEEDS_CONTINUATION, PEERS, CostEvent, CostTracker, run_peer
from nas.objectives.onnx_surrogate import OnnxCurveObjective
from nas.objectives.surrogate_benchmark import SurrogateBenchmarkObjective
from nas.objectives.table import TableObjective
from nas.progress import track_runs
from nas.search import SearchHistory, check_fidelities, check_pruning, run_search
from nas.space import Encoding, SearchSpace
from nas.spaces import space_from_config
from nas.stats import reach_table, seeds_mean_se, spearman
from nas.strategies import instantiate_strategy
from nas.strategies.pruning import strategy_pruning
from nas.costs.zero_cost import ZeroCostData, zero_cost_from_config

log = logging.getLogger(__name__)



@dataclass
class CostRecord:
    """The outcome of one strategy on one seed, against cost.

    ``best_by_cost`` holds ``[cost, value]`` each time the architecture the search would
    return changes value: the one with the best searched full-fidelity value so far, valued
    in the reported column (the searched one unless the protocol reports another)."""

    seed: int
    best_by_cost: list[list[float]]
    best_at: dict[str, float | None]
    cost_to_target: float | None
    evaluations: int
    full_evaluations: int
    cost: float
    wall_seconds: float = 0.0
    median_ask_seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def best_by_cost(events: list[CostEvent], report: Callable[[Encoding, float], float] | None = None) -> list[list[float]]:
    """``[cost, reported value of the returned architecture]`` after each change of it, and
    once more at the final cost. The returned architecture is the one with the best searched
    full value (the first of equals); ``report(encoding, searched value)`` values it (default:
    its searched value)."""
    best, shown, trace = -math.inf, None, []
    for cost, value, encoding in events:
        if value is not None and value > best:
            best = value
            reported = report(encoding, value) if report is not None else value
            if reported != shown:
                shown = reported
                trace.append([cost, reported])
    if events and trace and trace[-1][0] != events[-1][0]:
        trace.append([events[-1][0], trace[-1][1]])
    return trace


def best_at(trace: list[list[float]], cost: float) -> float | None:
    """The value of the returned architecture after ``cost`` (``None`` if there was none by then)."""
    known = [value for spent, value in trace if spent <= cost + 1e-9]
    return known[-1] if known else None


def record_of(
    seed: int, events: list[CostEvent], checkpoints: list[float], target: float | None,
    report: Callable[[Encoding, float], float] | None = None, **timings: float,
) -> CostRecord:
    """The :class:`CostRecord` of one search's events: its trace, the value of the returned
    architecture at each checkpoint (in equivalent full evaluations) and the cost at which it
    first reached ``target``."""
    trace = best_by_cost(events, report)
    reached = next((cost for cost, value in trace if target is not None and value >= target - 1e-9), None)
    return CostRecord(
        seed=seed,
        best_by_cost=trace,
        best_at={f"{c:g}": best_at(trace, c) for c in checkpoints},
        cost_to_target=reached,
        evaluations=len(events),
        full_evaluations=sum(1 for _, v, _ in events if v is not None),
        cost=events[-1][0] if events else 0.0,
        **timings,
    )


class _StopSearch(Exception):
    """Raised after an evaluation to end a search whose returned architecture can no longer change."""


def _report_lookup(cfg: DictConfig, objective: Any) -> Callable[[Encoding, float], float] | None:
    """How the reported column values an architecture, when it is not the searched one."""
    column = cfg.get("report_column")
    if not isinstance(objective, TableObjective) or not column or column == objective.column:
        return None
    values = TableObjective(objective.space, objective_path(cfg), column).values
    space = objective.space
    return lambda encoding, _: float(values[int(space.index_of(torch.tensor([encoding], dtype=torch.long))[0])])


def objective_path(cfg: DictConfig) -> str:
    """The main table of a table objective's config."""
    return str(cfg.objective.path)


def resolved_target(cfg: DictConfig, objective: Any, report: Callable[[Encoding, float], float] | None) -> float | None:
    """The value to reach: ``cfg.target``, where ``optimum`` means the best value of the reported
    column of a table."""
    target = cfg.get("target")
    if target != "optimum":
        return None if target is None else float(target)
    if not isinstance(objective, TableObjective):
        raise NASError(f"target=optimum needs a table objective, which knows its optimum; {type(objective).__name__} does not: give the target as a number.")
    if report is None:
        return objective.optimum
    values = TableObjective(objective.space, objective_path(cfg), cfg.report_column).values
    return float(torch.nan_to_num(values, nan=-math.inf).max())


def run_one(task: dict[str, Any]) -> tuple[str, CostRecord]:
    """Run one (strategy or peer, seed) pair; module-level so worker processes can run it."""
    configure_threads(task["threads"])
    cfg = task["cfg"]
    name, seed = task["name"], task["seed"]
    space = space_from_config(cfg)
    objective = hydra.utils.instantiate(cfg.objective, space=space)
    schedule = hydra.utils.instantiate(cfg.fidelity)
    report = _report_lookup(cfg, objective)
    # A table knows its optimum: once the search has evaluated it, what it returns is final.
    stop_value = objective.optimum if isinstance(objective, TableObjective) and cfg.get("stop_at_optimum", True) else None
    tracker = CostTracker(objective, schedule, float(cfg.budget), stop_value)
    started = time.perf_counter()
    ask_seconds: list[float] = []
    if name in cfg.strategies:
        zero_cost = ZeroCostData.load(Path(task["zero_cost_path"]), space) if task["zero_cost_path"] else None
        strategy = instantiate_strategy(cfg.strategies[name], space, seed, zero_cost)
        strategy.pruning = strategy_pruning(cfg, name)

        seen: list[SearchHistory] = []

        def on_evaluation(history: SearchHistory) -> None:
            seen[:] = [history]
            tracker.record(history.trials[-1].encoding, history.trials[-1].fidelity, history.evaluations[-1])
            if tracker.reached:
                raise _StopSearch

        try:
            run_search(strategy, objective, tracker.budget, on_evaluation=on_evaluation)
        except _StopSearch:
            pass
        ask_seconds = seen[0].ask_seconds if seen else []
    else:
        run_peer(name, space, tracker, seed, dict(cfg.peers[name] or {}))
    checkpoints = [float(c) for c in cfg.cost_checkpoints]
    record = record_of(
        seed, tracker.events, checkpoints, resolved_target(cfg, objective, report), report,
        wall_seconds=time.perf_counter() - started,
        median_ask_seconds=statistics.median(ask_seconds) if ask_seconds else 0.0,
    )
    log.info("%s seed %d: best %s after %.1f equivalents (%.1f s)", name, seed, record.best_by_cost[-1][1] if record.best_by_cost else None, record.cost, record.wall_seconds)
    return name, record


def agreement_row(fidelity: str, values: torch.Tensor, full: torch.Tensor, top_share: float = 0.1) -> dict[str, Any]:
    """How ``values`` of a cheaper fidelity rank architectures like their ``full`` values (both
    ``n``): the Spearman correlation over all of them and over the best ``top_share`` of them
    (by the full value), where a search must tell good from best; and the share of the top
    1 % by the full value that are also in the top 1 % by ``values``."""
    top = full >= torch.quantile(full, 1 - top_share)
    best = set(torch.topk(full, max(1, len(full) // 100)).indices.tolist())
    return {
        "fidelity": fidelity,
        "spearman": spearman(values.tolist(), full.tolist()),
        f"spearman_top_{top_share:g}": spearman(values[top].tolist(), full[top].tolist()),
        "top_1pct_kept": len(best & set(torch.topk(values, len(best)).indices.tolist())) / len(best),
    }


def fidelity_agreement(objective: SurrogateBenchmarkObjective, space: SearchSpace, epochs: list[int], samples: int, seed: int = 0) -> list[dict[str, Any]]:
    """:func:`agreement_row` of each number of ``epochs`` over ``samples`` random architectures.

    Args:
        objective: predicts ``n`` values of ``n x d`` codes at a number of epochs
            (``objective.accuracy(codes, epochs)``).
    """
    codes = space.sample(samples, torch.Generator().manual_seed(seed))
    full = objective.accuracy(codes, objective.fidelity.hi_epochs)
    return [agreement_row(f"{int(e)} epochs", objective.accuracy(codes, int(e)), full) for e in epochs]


def table_agreement(objective: TableObjective, report: torch.Tensor) -> list[dict[str, Any]]:
    """:func:`agreement_row` of a table's low-fidelity column against the ``report`` values,
    over every architecture the table lists."""
    assert objective.low_values is not None
    known = ~torch.isnan(objective.low_values) & ~torch.isnan(report)
    return [agreement_row(f"{objective.low_fidelity_column} ({objective.low_fidelity_cost:g} of a full evaluation)", objective.low_values[known], report[known])]


def agreement_report(rows: list[dict[str, Any]], samples: int | None) -> str:
    """The markdown table of :func:`agreement_row`'s rows (over ``samples`` random architectures, or all)."""
    top_key = next(k for k in rows[0] if k.startswith("spearman_top_"))
    share = float(top_key.removeprefix("spearman_top_"))
    over = f"{samples:,} random architectures" if samples else "every architecture of the table"
    lines = [
        f"## How each cheaper fidelity ranks {over} against the reported full evaluation",
        "",
        f"| fidelity | Spearman, all | Spearman, best {share:.0%} | top 1 % kept |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['fidelity']} | {r['spearman']:.2f} | {r[top_key]:.2f} | {r['top_1pct_kept']:.0%} |" for r in rows]
    return "\n".join(lines) + "\n\n"


def markdown_report(results: dict[str, list[CostRecord]], payload: dict[str, Any]) -> str:
    """Mean ± standard error of the returned architecture's value at each cost checkpoint,
    and of the cost to reach the target with a miss counted at the budget."""
    checkpoints = list(next(iter(results.values()))[0].best_at) if results else []
    target, budget = payload.get("target"), payload["budget"]
    protocol = payload.get("protocol", "")
    lines = [
        f"## Value of the returned architecture after N equivalent full evaluations (mean ± standard error over seeds; {payload['seeds']} seeds, budget {budget:g}{protocol})",
        "",
        "A cell with (k/n) averages the k seeds that had evaluated an architecture fully by then.",
        "",
        "| Strategy | " + " | ".join(f"@{c}" for c in checkpoints) + " |",
        "|---" * (len(checkpoints) + 1) + "|",
    ]
    for name, records in results.items():
        lines.append(f"| {name} | " + " | ".join(seeds_mean_se([r.best_at[c] for r in records]) for c in checkpoints) + " |")
    if target is not None:
        heading = f"Cost to reach {target:g}, in equivalent full evaluations with the cheap runs included"
        lines += ["", *reach_table(heading, {name: [r.cost_to_target for r in records] for name, records in results.items()}, budget, "equivalents")]
    lines += ["", "## Evaluations and time", "", "| Strategy | evaluations | full evaluations | median time to choose a batch (s) | wall time per seed (s) |", "|---|---|---|---|---|"]
    for name, records in results.items():
        lines.append(
            f"| {name} | {statistics.fmean(r.evaluations for r in records):.0f} | {statistics.fmean(r.full_evaluations for r in records):.0f} | "
            f"{statistics.median(r.median_ask_seconds for r in records):.3f} | {statistics.fmean(r.wall_seconds for r in records):.1f} |"
        )
    return "\n".join(lines) + "\n"


def convergence_plot(results: dict[str, list[CostRecord]], budget: float, path: Path) -> None:
    """Mean best full-fidelity value against cost, one line per strategy, ± standard error."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    grid = [budget * (i + 1) / 200 for i in range(200)]
    for name, records in results.items():
        means, errors, xs = [], [], []
        for x in grid:
            values = [best_at(r.best_by_cost, x) for r in records]
            if any(v is None for v in values):
                continue  # the mean is defined once every seed has a full evaluation
            known = [float(v) for v in values if v is not None]
            xs.append(x)
            means.append(statistics.fmean(known))
            errors.append(statistics.stdev(known) / math.sqrt(len(known)) if len(known) > 1 else 0.0)
        if xs:
            ax.plot(xs, means, label=name)
            ax.fill_between(xs, [m - e for m, e in zip(means, errors)], [m + e for m, e in zip(means, errors)], alpha=0.2)
    ax.set_xlabel("cost (equivalent full evaluations)")
    ax.set_ylabel("best full-fidelity value (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


#: The settings a multi-fidelity (strategy, seed) result depends on besides its own.
RESULT_KEYS = ("budget", "searchspace", "objective", "fidelity", "cost_checkpoints", "target", "report_column", "stop_at_optimum")


def run_mf_benchmark(cfg: DictConfig) -> dict[str, list[CostRecord]]:
    """Run every selected strategy and peer on every seed; write the reports to ``cfg.output_dir``."""
    if not float(cfg.budget) > 0:
        raise NASError(f"The budget must be a positive number of equivalent full evaluations, got {cfg.budget}.")
    if cfg.seeds <= 0:
        raise NASError(f"The number of seeds must be positive, got {cfg.seeds}.")
    peers = cfg.get("peers") or {}
    for name in cfg.include:
        if name not in cfg.strategies and name not in peers:
            raise NASError(f"Unknown strategy {name!r}; valid strategies are {', '.join([*cfg.strategies, *peers])}.")
        if name in peers and name not in PEERS:
            raise NASError(f"Unknown peer {name!r}; valid peers are {', '.join(PEERS)}.")
    space = space_from_config(cfg)
    objective = hydra.utils.instantiate(cfg.objective, space=space)  # a broken objective stops here, before any work
    continues = bool(getattr(objective, "continuation", True))
    for name in cfg.include:
        if name in peers and name in NEEDS_CONTINUATION and not continues:
            raise NASError(
                f"The peer {name!r} reports every epoch of a run, which needs an objective that continues runs; {type(objective).__name__} cannot "
                "(its fidelities are trainings of their own): leave it out, or use smac_mf, successive_halving or hyperband with rungs=schedule."
            )
        if name in cfg.strategies:
            strategy = hydra.utils.instantiate(cfg.strategies[name], space=space, seed=0)
            strategy.pruning = strategy_pruning(cfg, name)
            check_fidelities(strategy, objective)
            check_pruning(strategy, objective)
    agreement_epochs = list(cfg.get("agreement_epochs") or [])
    if agreement_epochs and not isinstance(objective, OnnxCurveObjective):
        raise NASError(f"agreement_epochs needs an objective that predicts any architecture at any epoch (objective=surrogate_benchmark or lcbench); {type(objective).__name__} does not.")
    outside = [e for e in agreement_epochs if isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= objective.fidelity.hi_epochs]
    if outside:
        raise NASError(f"agreement_epochs must be whole numbers of epochs 1..{objective.fidelity.hi_epochs}, got {outside[0]!r}.")
    zero_cost_path = ""
    if any(name in cfg.strategies and cfg.strategies[name].get("pretraining", "none") != "none" for name in cfg.include):
        zero_cost_path = str(zero_cost_from_config(space, cfg.zero_cost)[1])
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    seeds = range(int(cfg.first_seed), int(cfg.first_seed) + int(cfg.seeds))
    journal = Journal(output, {name: task_fingerprint(cfg, name, RESULT_KEYS, ("strategies", "peers")) for name in cfg.include})
    results, done = journal.read(CostRecord, seeds)
    tasks = [
        {"cfg": cfg, "name": name, "seed": seed, "zero_cost_path": zero_cost_path, "threads": cfg.threads_per_worker}
        for seed in seeds
        for name in cfg.include
        if (name, seed) not in done
    ]
    if done:
        log.info("%d (strategy, seed) results read back from %s; %d to run", len(done), journal.path, len(tasks))
    started = time.perf_counter()
    workers = max(1, int(cfg.workers))
    with worker_pool(workers) if workers > 1 and tasks else nullcontext() as pool:
        outcomes = pool.imap_unordered(run_one, tasks) if pool is not None else map(run_one, tasks)
        for name, record in track_runs(outcomes, len(tasks)):
            results[name].append(record)
            journal.append(name, record)
    for records in results.values():
        records.sort(key=lambda r: r.seed)
    samples: int | None = int(cfg.get("agreement_samples") or 20_000)
    report = _report_lookup(cfg, objective)
    if agreement_epochs:
        agreement = fidelity_agreement(objective, space, agreement_epochs, samples)  # type: ignore[arg-type]
    elif isinstance(objective, TableObjective) and objective.low_values is not None:
        reported = objective.values if report is None else TableObjective(space, objective_path(cfg), cfg.report_column).values
        agreement, samples = table_agreement(objective, reported), None
    else:
        agreement = []
    elapsed = time.perf_counter() - started
    column = getattr(objective, "column", None)
    protocol = f"; searched on {column}" + (f", reported in {cfg.report_column}" if report is not None else "") if column else ""
    payload = {
        "mode": "multifidelity",
        "budget": float(cfg.budget),
        "seeds": int(cfg.seeds),
        "first_seed": int(cfg.first_seed),
        "target": resolved_target(cfg, objective, report),
        "protocol": protocol,
        "wall_seconds": elapsed,
        "fidelity_agreement": agreement,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (output / "results.json").write_text(json.dumps({**payload, "strategies": {n: [asdict(r) for r in rs] for n, rs in results.items()}}, indent=1))
    report = (agreement_report(agreement, samples) if agreement else "") + markdown_report(results, payload) + f"\nTotal wall time: {elapsed:.0f} s with {workers} worker process(es).\n"
    (output / "results.md").write_text(report)
    convergence_plot(results, float(cfg.budget), output / "convergence.png")
    print(report)
    print(f"Results written to {output.resolve()}")
    return results
