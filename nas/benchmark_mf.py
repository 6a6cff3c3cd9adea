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
external peers of :mod:`nas.mf_peers` (``peers``), side by side on the same objective.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from nas.cli import configure_threads
from nas.errors import NASError
from nas.progress import track_runs
from nas.fidelity import HIGH_FIDELITY
from nas.mf_peers import PEERS, CostEvent, run_peer
from nas.objectives.surrogate_benchmark import SurrogateBenchmarkObjective
from nas.search import run_search
from nas.space import SearchSpace
from nas.stats import spearman
from nas.store import config_fingerprint
from nas.spaces import build_space
from nas.strategies import instantiate_strategy
from nas.zero_cost import ZeroCostData, zero_cost_from_config

log = logging.getLogger(__name__)



@dataclass
class CostRecord:
    """The outcome of one strategy on one seed, against cost."""

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


def best_by_cost(events: list[CostEvent]) -> list[list[float]]:
    """``[cost, best full value]`` after each improvement, and once more at the final cost."""
    best, trace = -math.inf, []
    for cost, value in events:
        if value is not None and value > best:
            best = value
            trace.append([cost, value])
    if events and trace and trace[-1][0] != events[-1][0]:
        trace.append([events[-1][0], best])
    return trace


def best_at(trace: list[list[float]], cost: float) -> float | None:
    """The best full value found within ``cost`` (``None`` if none was by then)."""
    known = [value for spent, value in trace if spent <= cost + 1e-9]
    return max(known) if known else None


def record_of(seed: int, events: list[CostEvent], checkpoints: list[float], target: float | None, **timings: float) -> CostRecord:
    """The :class:`CostRecord` of one search's events: its trace, the best at each checkpoint
    (in equivalent full evaluations) and the cost at which it first reached ``target``."""
    trace = best_by_cost(events)
    reached = next((cost for cost, value in trace if target is not None and value >= target), None)
    return CostRecord(
        seed=seed,
        best_by_cost=trace,
        best_at={f"{c:g}": best_at(trace, c) for c in checkpoints},
        cost_to_target=reached,
        evaluations=len(events),
        full_evaluations=sum(1 for _, v in events if v is not None),
        cost=events[-1][0] if events else 0.0,
        **timings,
    )


def run_one(task: dict[str, Any]) -> tuple[str, CostRecord]:
    """Run one (strategy or peer, seed) pair; module-level so worker processes can run it."""
    configure_threads(task["threads"])
    cfg = task["cfg"]
    name, seed = task["name"], task["seed"]
    space = build_space(**cfg.searchspace)
    objective = hydra.utils.instantiate(cfg.objective, space=space)
    budget = float(cfg.budget)
    started = time.perf_counter()
    ask_seconds: list[float] = []
    if name in cfg.strategies:
        zero_cost = ZeroCostData.load(Path(task["zero_cost_path"]), space) if task["zero_cost_path"] else None
        strategy = instantiate_strategy(cfg.strategies[name], space, seed, zero_cost)
        history = run_search(strategy, objective, budget)
        spent, events = 0.0, []
        for trial, evaluation in zip(history.trials, history.evaluations):
            spent += evaluation.cost
            full = trial.fidelity == HIGH_FIDELITY and evaluation.status == "ok"
            events.append((spent, evaluation.value if full else None))
        ask_seconds = history.ask_seconds
    else:
        events = run_peer(name, space, objective, budget, seed, dict(cfg.peers[name] or {}))
    checkpoints = [float(c) for c in cfg.cost_checkpoints]
    record = record_of(
        seed, events, checkpoints, cfg.get("target"),
        wall_seconds=time.perf_counter() - started,
        median_ask_seconds=statistics.median(ask_seconds) if ask_seconds else 0.0,
    )
    log.info("%s seed %d: best %s after %.1f equivalents (%.1f s)", name, seed, record.best_by_cost[-1][1] if record.best_by_cost else None, record.cost, record.wall_seconds)
    return name, record


def fidelity_agreement(objective: SurrogateBenchmarkObjective, space: SearchSpace, epochs: list[int], samples: int, seed: int = 0, top_share: float = 0.1) -> list[dict[str, float]]:
    """How well each number of ``epochs`` ranks ``samples`` random architectures like a full
    evaluation: per epoch, the Spearman correlation with the full value over all of them and
    over the best ``top_share`` of them (by the full value), where a search must tell good
    from best; and the share of the top 1 % by the full value that are also in the top 1 %
    at that epoch.

    Args:
        objective: predicts ``n`` values of ``n x d`` codes at a number of epochs
            (``objective.accuracy(codes, epochs)``).
    """
    codes = space.sample(samples, torch.Generator().manual_seed(seed))
    full = objective.accuracy(codes, objective.fidelity.hi_epochs)
    top = full >= torch.quantile(full, 1 - top_share)
    best = set(torch.topk(full, max(1, samples // 100)).indices.tolist())
    rows = []
    for epoch in epochs:
        values = objective.accuracy(codes, int(epoch))
        rows.append({
            "epochs": int(epoch),
            "spearman": spearman(values.tolist(), full.tolist()),
            f"spearman_top_{top_share:g}": spearman(values[top].tolist(), full[top].tolist()),
            "top_1pct_kept": len(best & set(torch.topk(values, len(best)).indices.tolist())) / len(best),
        })
    return rows


def agreement_report(rows: list[dict[str, float]], samples: int) -> str:
    """The markdown table of :func:`fidelity_agreement`'s rows."""
    top_key = next(k for k in rows[0] if k.startswith("spearman_top_"))
    share = float(top_key.removeprefix("spearman_top_"))
    lines = [
        f"## How each fidelity ranks {samples:,} random architectures against the full evaluation",
        "",
        f"| epochs | Spearman, all | Spearman, best {share:.0%} | top 1 % kept |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['epochs']} | {r['spearman']:.2f} | {r[top_key]:.2f} | {r['top_1pct_kept']:.0%} |" for r in rows]
    return "\n".join(lines) + "\n\n"


def _mean_se(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) / math.sqrt(len(values)):.2f}"


def markdown_report(results: dict[str, list[CostRecord]], payload: dict[str, Any]) -> str:
    """Mean ± standard error of the best full-fidelity value at each cost checkpoint."""
    checkpoints = list(next(iter(results.values()))[0].best_at) if results else []
    target = payload.get("target")
    lines = [
        f"## Best full-fidelity value after N equivalent full evaluations (mean ± standard error over seeds; {payload['seeds']} seeds, budget {payload['budget']:g})",
        "",
        "| Strategy | " + " | ".join(f"@{c}" for c in checkpoints) + f" | cost to reach {target} (mean over seeds that did) | reached |",
        "|---" * (len(checkpoints) + 3) + "|",
    ]
    for name, records in results.items():
        cells = [_mean_se([r.best_at[c] for r in records if r.best_at[c] is not None]) for c in checkpoints]
        hits = [r.cost_to_target for r in records if r.cost_to_target is not None]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.fmean(hits):.1f} | {len(hits)}/{len(records)} |" if hits else f"| {name} | " + " | ".join(cells) + f" | – | 0/{len(records)} |")
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


def task_fingerprint(cfg: DictConfig, name: str) -> str:
    """What a (strategy, seed) result depends on besides its seed: only results with the same
    fingerprint are read back from ``records.jsonl``."""
    parts = {key: OmegaConf.to_container(cfg[key], resolve=True) if isinstance(cfg[key], DictConfig | ListConfig) else cfg[key] for key in ("budget", "searchspace", "objective", "cost_checkpoints", "target")}
    setup = cfg.strategies[name] if name in cfg.strategies else cfg.peers[name]
    return config_fingerprint({**parts, "name": name, "setup": OmegaConf.to_container(setup, resolve=True) if setup is not None else None})


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
    space = build_space(**cfg.searchspace)
    objective = hydra.utils.instantiate(cfg.objective, space=space)  # a broken objective stops here, before any work
    agreement_epochs = list(cfg.get("agreement_epochs") or [])
    if agreement_epochs and not isinstance(objective, SurrogateBenchmarkObjective):
        raise NASError(f"agreement_epochs needs an objective that predicts any architecture at any epoch (objective=surrogate_benchmark); {type(objective).__name__} does not.")
    outside = [e for e in agreement_epochs if isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= objective.fidelity.hi_epochs]
    if outside:
        raise NASError(f"agreement_epochs must be whole numbers of epochs 1..{objective.fidelity.hi_epochs}, got {outside[0]!r}.")
    zero_cost_path = ""
    if any(name in cfg.strategies and cfg.strategies[name].get("pretraining", "none") != "none" for name in cfg.include):
        zero_cost_path = str(zero_cost_from_config(space, cfg.zero_cost)[1])
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    seeds = range(int(cfg.first_seed), int(cfg.first_seed) + int(cfg.seeds))
    results: dict[str, list[CostRecord]] = {name: [] for name in cfg.include}
    # Every finished (strategy, seed) is appended to records.jsonl at once: a run that is
    # stopped keeps them, and the same command started again runs only what is missing.
    journal = output / "records.jsonl"
    done: set[tuple[str, int]] = set()
    fingerprints = {name: task_fingerprint(cfg, name) for name in cfg.include}
    if journal.is_file():
        for line in journal.read_text().splitlines():
            entry = json.loads(line)
            name, seed = entry["name"], entry["record"]["seed"]
            if fingerprints.get(name) == entry.get("fingerprint") and seed in seeds and (name, seed) not in done:
                results[entry["name"]].append(CostRecord(**entry["record"]))
                done.add((entry["name"], entry["record"]["seed"]))
    tasks = [
        {"cfg": cfg, "name": name, "seed": seed, "zero_cost_path": zero_cost_path, "threads": cfg.threads_per_worker}
        for seed in seeds
        for name in cfg.include
        if (name, seed) not in done
    ]
    if done:
        log.info("%d (strategy, seed) results read back from %s; %d to run", len(done), journal, len(tasks))
    started = time.perf_counter()
    workers = max(1, int(cfg.workers))
    with journal.open("a") as sink:
        if workers == 1 or not tasks:
            outcomes = map(run_one, tasks)
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers)
            outcomes = pool.imap_unordered(run_one, tasks)
        for name, record in track_runs(outcomes, len(tasks)):
            results[name].append(record)
            sink.write(json.dumps({"name": name, "fingerprint": fingerprints[name], "record": asdict(record)}) + "\n")
            sink.flush()
        if workers > 1 and tasks:
            pool.close()
            pool.join()
    for records in results.values():
        records.sort(key=lambda r: r.seed)
    samples = int(cfg.get("agreement_samples") or 20_000)
    agreement = fidelity_agreement(objective, space, agreement_epochs, samples) if agreement_epochs else []
    elapsed = time.perf_counter() - started
    payload = {
        "mode": "multifidelity",
        "budget": float(cfg.budget),
        "seeds": int(cfg.seeds),
        "first_seed": int(cfg.first_seed),
        "target": cfg.get("target"),
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
