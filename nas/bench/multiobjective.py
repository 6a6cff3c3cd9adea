"""Multi-objective and constrained benchmarks on lookup tables.

``python -m nas.benchmark 'objectives=[test_acc:max,flops_m:min]' 'known=[flops_m]'`` runs
every strategy of ``multiobjective.include`` on every seed and writes, per strategy and
seed, to ``results.json``:

- ``hypervolume_ratio`` after 50 / 100 / 200 evaluations: the hypervolume of the front
  found (the feasible evaluated architectures) over that of the table's true front, each
  objective normalised by the table's minimum and maximum, the reference point at the
  worst value of each;
- ``front_share``: the share of the true front found (distinct objective vectors of the
  true front of which an architecture was evaluated);
- with constraints and a single objective, ``evals_to_optimum``: evaluations until the
  best feasible architecture of the table was evaluated;
- the same two counted by function, ``front_share_twins`` and ``evals_to_optimum_twins``:
  a point counts as found when one of its *twins* was evaluated, a member that computes
  the same function (:meth:`nas.space.SearchSpace.function_keys`) with the same values in
  every column but the first objective. Tables list twins separately, with accuracies
  that differ only by the noise of training them: on NAS-Bench-201, the best cell under
  ``flops_m <= 16`` is the luckiest of 90 identity cells, which no strategy can tell apart
  before evaluating them (``optimum_twins`` in ``results.json``: their number).

Two modes: every objective costs an evaluation (``paid``, the peers' setting), and the
``known`` columns are measured before training for every candidate (``known``, the
product's setting; only strategies that can use them run it). The table is any CSV of the
space's ``arch`` strings with numeric columns; ``extra_tables`` join more columns on ``arch``.
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from nas.cli import configure_threads
from nas.costs.columns import load_columns
from nas.errors import NASError
from nas.acquisition.goals import Goals
from nas.lifecycle import worker_pool
from nas.acquisition.pareto import hypervolume, non_dominated, normalise_to_unit
from nas.paths import resolve_path
from nas.progress import track_runs
from nas.space import SearchSpace
from nas.spaces import build_space
from nas.stats import mean_se, reach_cells
from nas.strategies.multiobjective import KnownCosts, instantiate_front_strategy
from nas.costs.zero_cost import ZeroCostData, zero_cost_from_config

log = logging.getLogger(__name__)

#: Evaluation counts at which fronts are scored.
CHECKPOINTS = (50, 100, 200)
MODES = ("paid", "known")


@dataclass
class FrontRecord:
    """The outcome of one strategy on one seed in one mode."""

    seed: int
    mode: str
    hypervolume_ratio: dict[str, float] = field(default_factory=dict)
    front_share: dict[str, float] = field(default_factory=dict)
    evals_to_optimum: int | None = None
    front_share_twins: dict[str, float] = field(default_factory=dict)
    evals_to_optimum_twins: int | None = None
    ratio_trace: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    median_ask_seconds: float = 0.0


class FrontTruth:
    """The table's truth for a set of goals: oriented values, feasibility, true front.

    Args:
        space: the enumerable space of the table.
        columns: name -> ``N`` values (see :func:`nas.costs.columns.load_columns`).
        goals: the objectives and constraints scored.

    Attributes:
        points: ``N x k`` oriented objective values, in ``[0, 1]`` (table min-max; 0 worst).
        feasible: ``N`` mask of members with every value and within every budget.
        front_keys: the distinct objective vectors of the true front (as tuples).
        true_hypervolume: hypervolume of the true front above the origin.
        twins: ``N`` class ids, equal for members computing the same function with the
            same values in every goal column but the first objective.
        front_twins: per true front point, the twin classes of the members having it.
    """

    def __init__(self, space: SearchSpace, columns: dict[str, torch.Tensor], goals: Goals) -> None:
        raw = goals.oriented(torch.stack([columns[n] for n in goals.names], 1))
        present = ~torch.isnan(raw).any(1)
        if not bool(present.any()):
            raise NASError(f"The table has no member with a value in every objective ({', '.join(goals.names)}).")
        worst, best = raw[present].min(0).values, raw[present].max(0).values
        self.points = normalise_to_unit(raw, worst, best)
        self.feasible = present & goals.check_satisfiable({c.name: columns[c.name] for c in goals.constraints} or {n: columns[n] for n in goals.names}, "the table")
        feasible_points = self.points[self.feasible]
        front = feasible_points[non_dominated(feasible_points)]
        self.front_keys = {tuple(row) for row in front.tolist()}
        self.reference = torch.zeros(raw.shape[1], dtype=torch.float64)
        self.true_hypervolume = hypervolume(front, self.reference)
        self.single_optimum = float(feasible_points[:, 0].max())
        others = torch.stack([columns[n] for n in goals.columns[1:]], 1) if len(goals.columns) > 1 else torch.zeros(space.size, 0, dtype=torch.float64)
        self.twins = space.twin_classes(others)
        rows = [tuple(r) for r in self.points.tolist()]
        self.front_twins = {key: set() for key in self.front_keys}
        for i in torch.nonzero(self.feasible).flatten().tolist():
            if rows[i] in self.front_twins:
                self.front_twins[rows[i]].add(int(self.twins[i]))
        optimum = self.feasible & (self.points[:, 0] >= self.single_optimum - 1e-12)
        self.optimum_twins = torch.isin(self.twins, self.twins[optimum]) & self.feasible

    def share_by_twins(self, index: torch.Tensor) -> float:
        """Share of the true front points of which a twin is among the members at rows ``index``."""
        seen = set(self.twins[index[self.feasible[index]]].tolist())
        return sum(1 for classes in self.front_twins.values() if classes & seen) / max(len(self.front_twins), 1)

    def score(self, index: torch.Tensor) -> tuple[float, float]:
        """Hypervolume ratio and front share of the members at rows ``index`` (evaluated)."""
        found = self.points[index[self.feasible[index]]]
        ratio = hypervolume(found, self.reference) / max(self.true_hypervolume, 1e-300)
        share = len(self.front_keys & {tuple(row) for row in found.tolist()}) / max(len(self.front_keys), 1)
        return ratio, share


def run_front_seed(task: dict[str, Any]) -> tuple[str, FrontRecord]:
    """One (strategy, mode, seed): a module-level function so worker processes can run it."""
    configure_threads(task["threads"])
    cfg = task["cfg"]
    space = build_space(**cfg.searchspace)
    columns = load_columns(space, task["tables"])
    goals = Goals.parse(cfg.objectives, cfg.get("constraints"), cfg.get("known") if task["mode"] == "known" else None)
    truth = FrontTruth(space, columns, goals)
    table = torch.stack([columns[n] for n in goals.columns], 1)
    known = KnownCosts(space, {n: columns[n] for n in goals.known}) if goals.known else None
    started = time.perf_counter()
    zero_cost = ZeroCostData.load(Path(task["zero_cost_path"]), space) if task["zero_cost_path"] else None
    strategy = instantiate_front_strategy(cfg.multiobjective.strategies[task["name"]], space, task["seed"], goals, known, zero_cost)
    budget = int(cfg.budget)
    evaluated: list[int] = []
    ask_seconds: list[float] = []
    while len(evaluated) < budget:
        tic = time.perf_counter()
        encodings = strategy.ask(None)[: budget - len(evaluated)]
        ask_seconds.append(time.perf_counter() - tic)
        if not encodings:
            break  # every allowed member was evaluated
        index = space.index_of(torch.tensor(encodings, dtype=torch.long))
        strategy.tell(encodings, table[index].tolist())
        evaluated += index.tolist()
    order = torch.tensor(evaluated, dtype=torch.long)
    record = FrontRecord(seed=task["seed"], mode=task["mode"], wall_seconds=time.perf_counter() - started, median_ask_seconds=statistics.median(ask_seconds))
    for n in CHECKPOINTS:
        if n <= budget:
            ratio, share = truth.score(order[:n])
            record.hypervolume_ratio[str(n)], record.front_share[str(n)] = ratio, share
            record.front_share_twins[str(n)] = truth.share_by_twins(order[:n])
    record.ratio_trace = [truth.score(order[:n])[0] for n in range(10, order.numel() + 1, 10)]
    if len(goals.objectives) == 1:
        feasible_values = torch.where(truth.feasible[order], truth.points[order, 0], torch.full((order.numel(),), -1.0, dtype=torch.float64))
        hits = torch.nonzero(feasible_values >= truth.single_optimum - 1e-12).flatten()
        record.evals_to_optimum = int(hits[0]) + 1 if hits.numel() else None
        twin_hits = torch.nonzero(truth.optimum_twins[order]).flatten()
        record.evals_to_optimum_twins = int(twin_hits[0]) + 1 if twin_hits.numel() else None
    log.info("%s (%s) seed %d: %s", task["name"], task["mode"], task["seed"], record.hypervolume_ratio)
    return task["name"] if task["mode"] == "paid" else f"{task['name']}+known", record


def _regret(ratios: list[float | None]) -> list[float | None]:
    """Hypervolume regrets ``1 - ratio``: ratios near 1 hide the differences that regrets show."""
    return [None if r is None else 1.0 - r for r in ratios]


def front_report(results: dict[str, list[FrontRecord]], payload: dict[str, Any]) -> str:
    """Markdown tables: hypervolume ratio and front share per strategy (mean over seeds),
    evaluations to the constrained optimum for a single objective, timings."""
    goals = Goals.parse(payload["objectives"], payload.get("constraints"), payload.get("known"))
    lines = [
        f"## {goals.describe()} on {Path(payload['table']).name} (+ {', '.join(Path(t).name for t in payload['extra_tables']) or 'no extra table'})",
        "",
        f"True front: {payload['front_size']} distinct points; {payload['feasible']:,} of {payload['members']:,} members feasible. Means ± standard errors over seeds"
        + ("; the hypervolume regret is 1 − the ratio of the hypervolume found to the true front's." if len(goals.objectives) > 1 else "."),
        "",
    ]
    checkpoints = [str(n) for n in CHECKPOINTS if n <= payload["budget"]]
    if len(goals.objectives) > 1:
        last = checkpoints[-1]
        lines += ["| Strategy | Seeds | " + " | ".join(f"HV regret @{n}" for n in checkpoints) + f" | HV ratio @{last} | Front share @{last} | Front share @{last}, twins count | Median ask (s) |"]
        lines += ["|---" * (len(checkpoints) + 6) + "|"]
        for name, records in results.items():
            regrets = [mean_se(_regret([r.hypervolume_ratio.get(n) for r in records]), 4) for n in checkpoints]
            ratio = mean_se([r.hypervolume_ratio.get(last) for r in records], 4)
            share = mean_se([r.front_share.get(last) for r in records], 1, percent=True)
            twins = mean_se([r.front_share_twins.get(last) for r in records], 1, percent=True)
            ask = statistics.median(r.median_ask_seconds for r in records)
            lines.append(f"| {name} | {len(records)} | {' | '.join(regrets)} | {ratio} | {share} | {twins} | {ask:.3f} |")
    else:
        twins = payload.get("optimum_twins", 1)
        lines += [
            f"| Strategy | Seeds | Evaluations to the constrained optimum (miss = budget, {payload['budget']}) | Reached | Mean over the seeds reaching it (range) "
            "| To a twin of the optimum (miss = budget) | Reached | Mean over the seeds reaching it (range) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, records in results.items():
            reach = reach_cells([r.evals_to_optimum for r in records], payload["budget"]) + reach_cells([r.evals_to_optimum_twins for r in records], payload["budget"])
            lines.append(f"| {name} | {len(records)} | " + " | ".join(reach) + " |")
        if twins > 1 and payload.get("optimum_functions", 1) == 1:
            lines += [
                "",
                f"The optimum is one of {twins} twins (members computing the same function, at the same cost) whose values differ only by training noise: "
                f"a strategy that cannot tell them apart before evaluating them needs {(twins + 1) / 2:.1f} evaluations of twins on average to reach it.",
            ]
    return "\n".join(lines) + "\n"


class _Serial:
    """The in-process stand-in of a worker pool (``workers=1``)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def imap_unordered(function: Any, tasks: list[dict[str, Any]]) -> Any:
        return map(function, tasks)


def merge_front_benchmarks(sources: list[str], output: Path) -> dict[str, list[FrontRecord]]:
    """Report the strategies of several front benchmarks of the same goals side by side."""
    merged: dict[str, list[FrontRecord]] = {}
    first: dict[str, Any] | None = None
    for source in sources:
        try:
            payload = json.loads((Path(source) / "results.json").read_text())
            results = {name: [FrontRecord(**r) for r in records] for name, records in payload.pop("strategies").items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NASError(f"{source} holds no results.json written by a front benchmark ({exc}).") from None
        key = ("table", "extra_tables", "objectives", "constraints", "budget")
        if first is not None and any(payload[k] != first[k] for k in key):
            raise NASError(f"{source} benchmarks other goals, tables or budget than {sources[0]}; only like runs can be merged.")
        first = first or payload
        merged.update(results)
    assert first is not None
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps({**first, "merged_from": sources, "strategies": {n: [asdict(r) for r in rs] for n, rs in merged.items()}}, indent=1))
    report = front_report(merged, first) + f"\nMerged from {', '.join(sources)}.\n"
    (output / "results.md").write_text(report)
    print(report)
    return merged


def check_known_are_costs(goals: Goals, space: SearchSpace, tables: list[str]) -> None:
    """Refuse a ``known`` column read from the results table ``tables[0]`` (what training
    gives: accuracies of any split or epoch), which would hand the search values correlated
    with its objective for every member; known columns come from the cost tables after it."""
    trained = set(load_columns(space, tables[:1]))
    leaking = [name for name in goals.known if name in trained]
    if leaking:
        costs = sorted(set(load_columns(space, tables[1:]))) if len(tables) > 1 else []
        raise NASError(
            f"Known column {leaking[0]!r} comes from the results table {Path(tables[0]).name}, so the search would be told a training result "
            f"of every member; known columns are costs from extra_tables ({', '.join(costs) or 'none given'})."
        )


def run_front_benchmark(cfg: DictConfig) -> dict[str, list[FrontRecord]]:
    """Run ``multiobjective.include`` x modes x seeds and write ``results.json`` and ``results.md``
    (or, with ``merge``, report earlier runs side by side)."""
    if cfg.get("merge"):
        return merge_front_benchmarks([str(m) for m in cfg.merge], Path(cfg.output_dir))
    if int(cfg.budget) <= 0 or int(cfg.seeds) <= 0:
        raise NASError(f"The budget and the number of seeds must be positive, got budget={cfg.budget} and seeds={cfg.seeds}.")
    settings = cfg.multiobjective
    unknown = [n for n in (*settings.include, *settings.known_include) if n not in settings.strategies]
    if unknown:
        raise NASError(f"Unknown strategy {unknown[0]!r}; valid multi-objective strategies are {', '.join(settings.strategies)}.")
    space = build_space(**cfg.searchspace)
    tables = [str(resolve_path(cfg.table)), *(str(resolve_path(t)) for t in cfg.get("extra_tables") or [])]
    columns = load_columns(space, tables)
    goals = Goals.parse(cfg.objectives, cfg.get("constraints"), cfg.get("known"))
    goals.validate(columns, f"the table {Path(tables[0]).name}" + (" with its extra tables" if len(tables) > 1 else ""))
    check_known_are_costs(goals, space, tables)
    truth = FrontTruth(space, columns, goals)  # says before any search when no member meets the budgets
    modes = [m for m in MODES if m == "paid" or goals.known]
    needs_zero_cost = any(settings.strategies[n].get("pretraining", "none") != "none" for n in (*settings.include, *settings.known_include))
    zero_cost_path = str(zero_cost_from_config(space, cfg.zero_cost)[1]) if needs_zero_cost else ""
    tasks = [
        {"cfg": cfg, "name": name, "mode": mode, "seed": int(cfg.first_seed) + s, "tables": tables, "zero_cost_path": zero_cost_path, "threads": cfg.threads_per_worker}
        for s in range(int(cfg.seeds))
        for mode in modes
        for name in (settings.include if mode == "paid" else settings.known_include)
    ]
    started = time.perf_counter()
    results: dict[str, list[FrontRecord]] = {}
    workers = max(1, int(cfg.workers))
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "table": tables[0],
        "extra_tables": tables[1:],
        "objectives": [str(g) for g in goals.objectives],
        "constraints": [str(c) for c in goals.constraints],
        "known": list(goals.known),
        "budget": int(cfg.budget),
        "seeds": int(cfg.seeds),
        "front_size": len(truth.front_keys),
        "feasible": int(truth.feasible.sum()),
        "optimum_twins": int(truth.optimum_twins.sum()),
        "optimum_functions": int(truth.twins[truth.optimum_twins].unique().numel()),
        "members": space.size,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }

    def write(report: bool) -> None:
        """``results.json`` after every finished seed, so that a long run can be read while it goes."""
        for records in results.values():
            records.sort(key=lambda r: r.seed)
        payload["wall_seconds"] = time.perf_counter() - started
        (output / "results.json").write_text(json.dumps({**payload, "strategies": {n: [asdict(r) for r in rs] for n, rs in results.items()}}, indent=1))
        if report:
            text = front_report(results, payload) + f"\nTotal wall time: {payload['wall_seconds']:.0f} s with {workers} worker process(es).\n"
            (output / "results.md").write_text(text)
            print(text)
            print(f"Results written to {output.resolve()}")

    with worker_pool(workers) if workers > 1 else _Serial() as pool:
        for name, record in track_runs(pool.imap_unordered(run_front_seed, tasks), len(tasks)):
            results.setdefault(name, []).append(record)
            write(report=False)
    write(report=True)
    return results
