"""``python -m nas.benchmark benchmark=training``: strategies side by side on real training.

Every strategy searches the same space on the embedded dataset for the same budget in
epochs, over several seeds, each candidate trained for real with Lightning (one core per
search, ``workers`` searches at a time). What is reported for each search is what a user
would get: the network it returns, selected on validation, valued on the test split that
no search sees (the objective measures it; the harness takes it out of the metrics before
the strategy is told). Pruning variants run the same strategy with a pruning rule
(``pruning.<name>``, :mod:`nas.strategies.pruning`); their runs stopped early are charged the
epochs they ran, so every strategy spends the same epochs.

Besides the comparison, the report says

- how noisy one candidate's result is: returned networks trained again with another
  training seed (``noise_networks`` of them);
- how well each epoch ranks the completed runs against their last epoch (what pruning
  relies on);
- whether the small task ranks networks like the real one: the rank correlation between the
  accuracy of the trained cells here and their CIFAR-10 accuracy in the NAS-Bench-201 table
  (``rank_table``), for spaces whose architectures the table names.

Finished (strategy, seed) results go through :mod:`nas.bench.journal`: the same command
started again runs only what is missing.
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

from omegaconf import DictConfig, OmegaConf

from nas.bench.journal import Journal, task_fingerprint
from nas.cli import configure_threads
from nas.costs.proxies import dataset_batch
from nas.costs.zero_cost import ZeroCostData, zero_cost_from_config
from nas.errors import NASError
from nas.fidelity import HIGH_FIDELITY
from nas.lifecycle import worker_pool
from nas.objectives.training import HELD_OUT_METRIC, TrainingObjective
from nas.paths import resolve_path
from nas.progress import track_runs
from nas.search import TWIN_OF, SearchHistory, run_search
from nas.space import Encoding, SearchSpace
from nas.spaces import build_space
from nas.stats import mean_se, spearman
from nas.strategies import instantiate_strategy
from nas.strategies.pruning import curve_of, strategy_pruning
from nas.trial import PRUNED, Evaluation, StopRule, Trial, evaluate_trial

log = logging.getLogger(__name__)

#: The settings a (strategy, seed) result depends on besides its own (see nas.bench.journal).
RESULT_KEYS = ("budget_epochs", "searchspace", "dataset", "objective", "fidelity", "trainer", "zero_cost", "training_seed", "ensemble")
FILE_JSON, FILE_MD, FILE_PNG = "results.json", "report.md", "training.png"


@dataclass
class TrainingRecord:
    """One strategy's search on one seed.

    ``trace`` has one row per evaluation: ``[epochs spent, wall seconds, validation and test
    accuracy (%) of the network the search would return then]`` (``nan`` before the first
    completed run). ``curves`` maps each network trained to its last epoch to its validation
    accuracy after every epoch.
    """

    seed: int
    trace: list[list[float]]
    evaluations: int
    pruned: int
    failed: int
    epochs: float
    wall_seconds: float
    returned: str | None
    returned_val: float | None
    returned_test: float | None
    curves: dict[str, list[float]] = field(default_factory=dict)


class HeldOutHidden:
    """A training objective whose test accuracy is kept here, not handed to the search.

    Args:
        objective: measures ``HELD_OUT_METRIC`` on each trained network.
    """

    def __init__(self, objective: TrainingObjective) -> None:
        self.objective = objective
        self.fidelity = objective.fidelity
        self.held_out: dict[tuple[Encoding, str], float] = {}

    reports_epochs = True

    def planned_cost(self, fidelity: str) -> float:
        return self.objective.planned_cost(fidelity)

    def evaluate(self, encoding: Encoding, fidelity: str = HIGH_FIDELITY, stop_rule: StopRule | None = None) -> Evaluation:
        evaluation = evaluate_trial(self.objective, Trial(encoding, fidelity, stop_rule))
        self.held_out[(tuple(encoding), fidelity)] = evaluation.metrics.pop(HELD_OUT_METRIC, math.nan)
        return evaluation


def build_training_objective(cfg: DictConfig, space: SearchSpace, seed: int) -> TrainingObjective:
    """The benchmark's training objective, measuring held-out accuracy, training with ``seed``."""
    return TrainingObjective.from_config(cfg, space, seed, held_out_metric=True, continuation=False, checkpoint_dir=None)


def _returned_trace(space: SearchSpace, history: SearchHistory, held_out: dict[tuple[Encoding, str], float], clock: list[float], hi_epochs: int) -> list[list[float]]:
    """The ``trace`` of a :class:`TrainingRecord` (see there)."""
    trace, spent, best_val, best_test = [], 0.0, -math.inf, math.nan
    for index, (trial, evaluation) in enumerate(zip(history.trials, history.evaluations)):
        spent += evaluation.cost * hi_epochs
        if evaluation.status == "ok" and trial.fidelity == HIGH_FIDELITY and evaluation.value > best_val and TWIN_OF not in evaluation.metrics:
            best_val, best_test = evaluation.value, held_out.get((trial.encoding, trial.fidelity), math.nan)
        trace.append([spent, clock[index], best_val if math.isfinite(best_val) else math.nan, best_test])
    return trace


def run_one(task: dict[str, Any]) -> tuple[str, TrainingRecord]:
    """Run one (strategy, seed) search; a module-level function so worker processes can run it."""
    configure_threads(task["threads"])
    cfg, name, seed = task["cfg"], task["name"], task["seed"]
    space = build_space(**cfg.searchspace)
    objective = HeldOutHidden(build_training_objective(cfg, space, int(cfg.training_seed)))
    zero_cost = ZeroCostData.load(Path(task["zero_cost_path"]), space) if task["zero_cost_path"] else None
    started = time.perf_counter()
    strategy = instantiate_strategy(cfg.strategies[name], space, seed, zero_cost)
    strategy.skip_twins = True
    strategy.pruning = strategy_pruning(cfg, name)
    clock: list[float] = []
    hi_epochs = objective.fidelity.hi_epochs
    history = run_search(
        strategy, objective, float(cfg.budget_epochs) / hi_epochs, reuse_twins=True,
        on_evaluation=lambda _: clock.append(time.perf_counter() - started),
    )
    trace = _returned_trace(space, history, objective.held_out, clock, hi_epochs)
    curves = {
        space.to_string(t.encoding): [v for _, v in sorted(curve_of(e).items())]
        for t, e in zip(history.trials, history.evaluations)
        if e.status == "ok" and TWIN_OF not in e.metrics
    }
    best = history.best()
    record = TrainingRecord(
        seed=seed,
        trace=trace,
        evaluations=len(history.evaluations),
        pruned=sum(e.status == PRUNED for e in history.evaluations),
        failed=sum(e.status == "failed" for e in history.evaluations),
        epochs=history.cost * hi_epochs,
        wall_seconds=time.perf_counter() - started,
        returned=space.to_string(best[0].encoding) if best else None,
        returned_val=best[1].value if best else None,
        returned_test=objective.held_out.get((best[0].encoding, best[0].fidelity)) if best else None,
        curves=curves,
    )
    log.info("%s seed %d: returned %.2f %% (test), %d evaluations, %d pruned, %.0f s", name, seed, record.returned_test or math.nan, record.evaluations, record.pruned, record.wall_seconds)
    return name, record


def retrain_one(task: dict[str, Any]) -> tuple[str, list[float]]:
    """Train one network again with another training seed: ``(architecture, [val, test])``."""
    configure_threads(task["threads"])
    cfg = task["cfg"]
    space = build_space(**cfg.searchspace)
    objective = HeldOutHidden(build_training_objective(cfg, space, int(cfg.training_seed) + 1))
    encoding = space.parse(task["architecture"])
    evaluation = objective.evaluate(encoding)
    return task["architecture"], [evaluation.value, objective.held_out[(encoding, HIGH_FIDELITY)]]


# ---------------------------------------------------------------------- report
def value_at(record: TrainingRecord, epochs: float, column: int = 3) -> float | None:
    """The test (``column=3``) or validation (``2``) accuracy of what ``record``'s search
    returned once it had spent ``epochs`` (``None``: nothing completed by then)."""
    value = None
    for row in record.trace:
        if row[0] > epochs + 1e-9:
            break
        value = row[column] if math.isfinite(row[column]) else None
    return value


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan


def noise_summary(records: dict[str, list[TrainingRecord]], retrained: dict[str, list[float]]) -> dict[str, float]:
    """How much one network's accuracy moves with the training seed: the standard deviation
    of one run (that of the difference of two runs over the square root of 2)."""
    first: dict[str, list[float]] = {}
    for runs in records.values():
        for record in runs:
            if record.returned is not None and record.returned_val is not None and record.returned_test is not None:
                first[record.returned] = [record.returned_val, record.returned_test]
    pairs = [(first[a], again) for a, again in retrained.items() if a in first]
    if not pairs:
        return {}
    val = [again[0] - one[0] for one, again in pairs]
    test = [again[1] - one[1] for one, again in pairs]
    return {
        "networks": len(pairs),
        "val_sd": _sd(val) / math.sqrt(2),
        "test_sd": _sd(test) / math.sqrt(2),
        "val_mean_abs": statistics.fmean(abs(d) for d in val),
        "test_mean_abs": statistics.fmean(abs(d) for d in test),
    }


def epoch_agreement(records: dict[str, list[TrainingRecord]]) -> dict[int, tuple[float, int]]:
    """Epoch -> (Spearman of the completed runs' values after it with their last epoch's, runs)."""
    curves = {arch: curve for runs in records.values() for r in runs for arch, curve in r.curves.items()}
    if not curves:
        return {}
    length = max(len(c) for c in curves.values())
    full = [c for c in curves.values() if len(c) == length]
    return {k + 1: (spearman([c[k] for c in full], [c[-1] for c in full]), len(full)) for k in range(length - 1)}


def table_agreement(records: dict[str, list[TrainingRecord]], table: str | None, column: str) -> tuple[float, int] | None:
    """Spearman between the final validation accuracy of every cell trained here and the
    table's ``column`` for the same architecture, and how many cells (``None``: no table)."""
    if not table:
        return None
    import pandas as pd

    frame = pd.read_csv(resolve_path(table), usecols=["arch", column]).set_index("arch")[column]
    here = {arch: curve[-1] for runs in records.values() for r in runs for arch, curve in r.curves.items()}
    shared = [arch for arch in here if arch in frame.index]
    if len(shared) < 3:
        return None
    return spearman([here[a] for a in shared], [float(frame[a]) for a in shared]), len(shared)


def markdown_report(results: dict[str, list[TrainingRecord]], payload: dict[str, Any]) -> str:
    budget = float(payload["budget_epochs"])
    points = [budget / 4, budget / 2, budget]
    lines = [
        f"# Real training: {payload['space']} on {payload['dataset']}, {budget:g} epochs per search, {payload['seeds']} seeds",
        "",
        "Test accuracy (%) of the network each search returns (selected on validation), mean ± standard error over seeds, "
        f"after a quarter, half and all of the epochs; a search with nothing completed by then counts as missing (–).",
        "",
        "| strategy | " + " | ".join(f"{p:g} epochs" for p in points) + " | validation at the end | evaluations | pruned | wall time per search |",
        "|---|" + "---|" * (len(points) + 4),
    ]
    for name, runs in results.items():
        cells = [mean_se([value_at(r, p) for r in runs]) for p in points]
        lines.append(
            f"| {name} | " + " | ".join(cells)
            + f" | {mean_se([value_at(r, budget, 2) for r in runs])} | {statistics.fmean(r.evaluations for r in runs):.1f} | {statistics.fmean(r.pruned for r in runs):.1f}"
            + f" | {statistics.fmean(r.wall_seconds for r in runs):.0f} s |"
        )
    noise = payload.get("noise") or {}
    if noise:
        lines += [
            "",
            f"Noise of one result: {noise['networks']} returned networks trained again with another training seed move by "
            f"{noise['test_mean_abs']:.2f} points of test accuracy on average ({noise['val_mean_abs']:.2f} of validation); "
            f"the standard deviation of one run is {noise['test_sd']:.2f} (test) and {noise['val_sd']:.2f} (validation).",
        ]
    pairs = payload.get("pairs") or {}
    if pairs:
        lines += ["", "Pruning: the test accuracy of the pruned variant with half the epochs against the unpruned strategy with all of them.", ""]
        lines += ["| pruned variant | its epochs per evaluation | at half the epochs | unpruned, all epochs | pruned, all epochs |", "|---|---|---|---|---|"]
        for pruned, base in pairs.items():
            if pruned in results and base in results:
                per_eval = statistics.fmean(r.epochs / r.evaluations for r in results[pruned])
                lines.append(
                    f"| {pruned} (vs {base}) | {per_eval:.2f} | {mean_se([value_at(r, budget / 2) for r in results[pruned]])} "
                    f"| {mean_se([value_at(r, budget) for r in results[base]])} | {mean_se([value_at(r, budget) for r in results[pruned]])} |"
                )
    agreement = payload.get("epoch_agreement") or {}
    if agreement:
        lines += ["", "How each epoch ranks the completed runs against their last epoch (Spearman): " + ", ".join(f"epoch {k}: {rho:.2f} ({n} runs)" for k, (rho, n) in agreement.items()) + "."]
    table = payload.get("table_agreement")
    if table:
        lines += ["", f"The cells trained here rank like NAS-Bench-201's CIFAR-10 table with a Spearman correlation of {table[0]:.2f} over {table[1]} cells."]
    lines += ["", payload.get("note", "")]
    return "\n".join(lines) + "\n"


def training_plot(results: dict[str, list[TrainingRecord]], budget: float, path: Path) -> Path | None:
    """Mean returned test accuracy (± standard error) against epochs spent and wall time."""
    from nas.report.records import new_figure, save_figure

    figure, (by_epochs, by_time) = new_figure(width=12.0, columns=2)
    grid = [budget * i / 60 for i in range(1, 61)]
    for index, (name, runs) in enumerate(results.items()):
        color = f"C{index % 10}"
        means, errors, xs = [], [], []
        for x in grid:
            values = [v for r in runs if (v := value_at(r, x)) is not None]
            if values and len(values) == len(runs):  # every seed has returned something by then
                xs.append(x)
                means.append(statistics.fmean(values))
                errors.append(_sd(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)
        by_epochs.plot(xs, means, color=color, label=name)
        by_epochs.fill_between(xs, [m - e for m, e in zip(means, errors)], [m + e for m, e in zip(means, errors)], color=color, alpha=0.15)
        for r in runs:
            steps = [(row[1], row[3]) for row in r.trace if math.isfinite(row[3])]
            if steps:
                by_time.step(*zip(*steps), where="post", color=color, alpha=0.4, linewidth=1)
    by_epochs.set(xlabel="epochs spent", ylabel="test accuracy of the returned network (%)", title="Mean over seeds (± SE)")
    by_time.set(xlabel="wall time of the search (s)", ylabel="test accuracy of the returned network (%)", title="Every seed")
    return save_figure(figure, [by_epochs], path)


def run_training_benchmark(cfg: DictConfig) -> dict[str, list[TrainingRecord]]:
    """Run every included strategy on every seed with real training; write the reports to ``cfg.output_dir``."""
    if not float(cfg.budget_epochs) > 0:
        raise NASError(f"budget_epochs must be a positive number of epochs, got {cfg.budget_epochs}.")
    if int(cfg.seeds) <= 0:
        raise NASError(f"The number of seeds must be positive, got {cfg.seeds}.")
    unknown = [name for name in cfg.include if name not in cfg.strategies]
    if unknown:
        raise NASError(f"Unknown strategy {unknown[0]!r}; valid strategies are {', '.join(cfg.strategies)}.")
    space = build_space(**cfg.searchspace)
    objective = build_training_objective(cfg, space, int(cfg.training_seed))  # checks the dataset before any work
    if not objective.dataset.has_test_split:
        raise NASError("The real-training benchmark reports test accuracy, but this dataset has no test split; use dataset=fashion_mnist or one with a test split.")
    for name in cfg.include:
        rule = strategy_pruning(cfg, name)
        if rule is not None:
            rule.check(objective.fidelity.hi_epochs)
    zero_cost_path = ""
    if any(cfg.strategies[n].get("pretraining", "none") != "none" for n in cfg.include):
        # Computed once here; worker processes load the cached file.
        batch = dataset_batch(objective.dataset, int(cfg.zero_cost.get("proxy_batch_size", 32)))
        zero_cost_path = str(zero_cost_from_config(space, cfg.zero_cost, dataset_batch=batch)[1])
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    seeds = range(int(cfg.first_seed), int(cfg.first_seed) + int(cfg.seeds))
    threads = int(cfg.threads_per_worker)
    tasks = [{"cfg": cfg, "name": name, "seed": seed, "zero_cost_path": zero_cost_path, "threads": threads} for seed in seeds for name in cfg.include]
    journal = Journal(output, {name: task_fingerprint(cfg, name, RESULT_KEYS) for name in cfg.include})
    results, done = journal.read(TrainingRecord, seeds)
    tasks = [task for task in tasks if (task["name"], task["seed"]) not in done]
    if done:
        log.info("%d (strategy, seed) results read back from %s; %d to run", len(done), journal.path, len(tasks))
    workers = max(1, int(cfg.workers))
    started = time.perf_counter()
    retrained: dict[str, list[float]] = {}
    noise_file = output / "retrained.json"
    if noise_file.is_file():
        retrained = json.loads(noise_file.read_text())
    with worker_pool(workers) if workers > 1 else nullcontext() as pool:
        outcomes = pool.imap_unordered(run_one, tasks) if pool is not None else map(run_one, tasks)
        for name, record in track_runs(outcomes, len(tasks), "searches"):
            results[name].append(record)
            journal.append(name, record)
        returned = sorted({r.returned for runs in results.values() for r in runs if r.returned is not None} - set(retrained))
        again = [{"cfg": cfg, "architecture": a, "threads": threads} for a in returned[: max(0, int(cfg.noise_networks) - len(retrained))]]
        outcomes_again = pool.imap_unordered(retrain_one, again) if pool is not None else map(retrain_one, again)
        for architecture, values in track_runs(outcomes_again, len(again), "noise"):
            retrained[architecture] = values
            noise_file.write_text(json.dumps(retrained))
    elapsed = time.perf_counter() - started
    for records in results.values():
        records.sort(key=lambda r: r.seed)
    payload = {
        "space": space.name,
        "dataset": str(cfg.dataset._target_).rsplit(".", 1)[-1],
        "budget_epochs": float(cfg.budget_epochs),
        "seeds": int(cfg.seeds),
        "noise": noise_summary(results, retrained),
        "pairs": OmegaConf.to_container(cfg.pruned_pairs, resolve=True) if cfg.get("pruned_pairs") else {},
        "epoch_agreement": epoch_agreement(results),
        "table_agreement": table_agreement(results, cfg.get("rank_table"), str(cfg.get("rank_column", "test_acc"))),
        "wall_seconds": elapsed,
        "note": f"Total wall time: {elapsed:.0f} s with {workers} worker process(es)" + (f", {len(done)} (strategy, seed) results read back." if done else "."),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    report = markdown_report(results, payload)
    (output / FILE_MD).write_text(report)
    (output / FILE_JSON).write_text(json.dumps({**payload, "results": {n: [asdict(r) for r in rs] for n, rs in results.items()}}, indent=1, default=str))
    training_plot(results, float(cfg.budget_epochs), output / FILE_PNG)
    print(report)
    print(f"Results written to {output.resolve()}")
    return results
