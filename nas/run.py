"""``python -m nas.run``: one architecture search composed by Hydra.

Config groups: ``searchspace``, ``objective``, ``strategy``, ``ensemble``, ``zero_cost``,
``fidelity``, ``dataset``, ``trainer``, ``logger``, ``executor``. Example:
``python -m nas.run searchspace=nb201 objective=table strategy=bo budget=100``.

Every evaluation goes to ``<output_dir>/store.sqlite``. Running the same command again
resumes the search from that store: nothing finished is run twice, nothing is lost.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from nas.cli import configure_threads, quote_comparisons, user_errors
from nas.costs.columns import load_columns
from nas.errors import NASError, positive_number, whole_number
from nas.executors import LocalExecutor, ProcessExecutor
from nas.executors.pool import Pool
from nas.report.front import FRONT_PNG, front_of, front_plot, front_table
from nas.acquisition.goals import Goals
from nas.objectives.base import Evaluation
from nas.objectives.costs import CostAwareObjective
from nas.objectives.training import TrainingObjective
from nas.costs.measured import MEASURABLE, MeasuredCosts
from nas.paths import resolve_path
from nas.progress import (
    SearchProgress,
    bars_with_logging,
    estimate_epoch_seconds,
    format_duration,
)
from nas.costs.proxies import dataset_batch
from nas.report import (
    EvaluationRecord,
    median_value,
    search_gain_lines,
    surrogate_rank_correlation,
    write_report,
)
from nas.search import TWIN_OF, SearchHistory, run_search
from nas.space import Encoding, SearchSpace
from nas.spaces import space_from_config
from nas.report.status import read_run
from nas.store import RunLock, Store, config_fingerprint
from nas.strategies import Strategy, instantiate_strategy
from nas.strategies.multiobjective import KnownCosts, instantiate_front_strategy
from nas.strategies.pruning import build_pruning
from nas.trial import PRUNED, Trial
from nas.strategies.priors import (
    NEAR_PRIOR,
    PRIOR,
    PriorsFirst,
    parse_priors,
    prior_origin,
)
from nas.costs.zero_cost import zero_cost_from_config, zero_cost_ready

log = logging.getLogger(__name__)

#: Config keys that decide what a search does; a store only resumes the same values.
SEARCH_KEYS = ("searchspace", "objective", "strategy", "ensemble", "fidelity", "dataset", "trainer", "seed")
#: Keys of a search's goals: part of its identity when set.
GOAL_KEYS = ("objectives", "constraints", "known", "cost_tables")
#: Keys of a search's priors (architectures evaluated first): part of its identity when set.
PRIOR_KEYS = ("initial", "initial_neighbours")


def goals_of(cfg: DictConfig) -> Goals | None:
    """The search's goals when it has several objectives or budgets (``None``: one value)."""
    if not cfg.get("objectives") and not cfg.get("constraints"):
        return None
    return Goals.parse(cfg.get("objectives") or ["accuracy:max"], cfg.get("constraints"), cfg.get("known"))


def cost_tables(cfg: DictConfig, space: SearchSpace) -> list[str]:
    """``cost_tables``, or the cost table shipped for the space (``package://<space>/costs.csv``) when unset."""
    if cfg.get("cost_tables") is not None:
        return [str(t) for t in cfg.cost_tables]
    shipped = f"package://{space.name}/costs.csv"
    return [shipped] if resolve_path(shipped).is_file() else []


def cost_aware_objective(cfg: DictConfig, objective: Any, space: SearchSpace, goals: Goals) -> CostAwareObjective:
    """``objective`` reporting the goal columns: from the cost tables, and measured on the
    fused network before training (``measured_costs``) for those no table holds."""
    tables = cost_tables(cfg, space)
    columns = load_columns(space, tables) if tables else {}
    tabulated = list(columns)
    value = goals.objectives[0].name
    goals.validate(dict.fromkeys([value, *tabulated, *MEASURABLE]), "the search, with its cost tables and the costs measurable before training,")
    to_measure = [c for c in goals.columns if c in MEASURABLE and c not in tabulated]
    known_untabulated = [c for c in goals.known if c not in tabulated]
    if known_untabulated:
        raise NASError(
            f"Known costs ({', '.join(known_untabulated)}) need a cost table covering every member "
            "(python -m nas.latency_table num_samples=all writes one for latency); without one, drop known and the costs are measured before each training."
        )
    measured = MeasuredCosts(space, to_measure, **cfg.measured_costs) if to_measure else None
    if measured is not None:
        log.info("measured before training on %s: %s (cached in %s)", measured.device, ", ".join(to_measure), measured.path)
    return CostAwareObjective(objective, space, goals, columns, measured)


def trains_candidates(objective: Any) -> bool:
    """Whether an ``objective`` config node trains networks (and so uses dataset, trainer, fidelity)."""
    return str(objective.get("_target_", "")).endswith("TrainingObjective")


def search_identity(cfg: DictConfig) -> dict[str, Any]:
    """The part of the configuration a resumed search must share with the stored one.

    The budget (a search may be extended), the logger and output paths are left out, and
    only groups the objective actually uses count (a table search ignores the dataset).
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    identity = {key: container.get(key) for key in SEARCH_KEYS if key in container}
    identity.update({key: container[key] for key in GOAL_KEYS + PRIOR_KEYS if container.get(key)})
    if (container.get("pruning") or {}).get("rule", "none") != "none":
        identity["pruning"] = container["pruning"]  # without pruning, stores of earlier versions still resume
    if (container.get("hparams") or {}).get("variables"):
        # Likewise only when hyperparameters are searched; the store sorts keys, so the declared
        # order of the variables (their place in every encoding) is kept beside them.
        identity["hparams"] = {**container["hparams"], "order": list(container["hparams"]["variables"])}
    if container.get("objectives") or container.get("constraints"):
        identity["cost_device"] = (container.get("measured_costs") or {}).get("device", "cpu")  # latency differs per device
    if not trains_candidates(cfg.objective):
        for key in ("dataset", "trainer", "fidelity"):
            identity.pop(key, None)
    zero_cost = dict(container.get("zero_cost") or {})
    zero_cost.pop("cache_dir", None)
    identity["zero_cost"] = zero_cost
    return identity


def check_image_size(cfg: DictConfig, space: SearchSpace) -> None:
    """Refuse images the space's networks cannot take, or of another size than the space's
    resolution (at which costs, proxies and matched widths are measured)."""
    size = cfg.dataset.get("image_size")
    resolution = getattr(space, "resolution", None)
    if size is None:
        return
    if resolution is not None and int(size) != int(resolution):
        raise NASError(
            f"dataset.image_size is {size} but searchspace.resolution is {resolution}: costs, zero-cost proxies and "
            f"matched widths are measured at the space's resolution; set searchspace.resolution={size} (the dataset follows it)."
        )
    space.check_image_size(int(size))


def build_objective(cfg: DictConfig, space: SearchSpace) -> Any:
    """The objective of the config; a training objective also gets the dataset, trainer and fidelity."""
    if trains_candidates(cfg.objective):
        return TrainingObjective.from_config(cfg, space, seed=cfg.seed)
    return hydra.utils.instantiate(cfg.objective, space=space)


def records_of(space: SearchSpace, history: SearchHistory) -> list[EvaluationRecord]:
    return [
        EvaluationRecord.from_evaluation(i, space.to_string(t.encoding), t.fidelity, e, s)
        for i, (t, e, s) in enumerate(zip(history.trials, history.evaluations, history.seconds))
    ]


def announce_search(cfg: DictConfig, space: SearchSpace, objective: Any, output: Path, pretraining: bool) -> float:
    """Log how many evaluations the search will run and roughly how long; returns the cost already spent."""
    try:
        stored = read_run(output) if (output / "store.sqlite").is_file() else None
    except NASError:
        stored = None  # the store itself says what is wrong with it when the search opens it
    spent = stored.cost if stored is not None else 0.0
    left = max(0.0, float(cfg.budget) - spent)
    plan = f"search: {left:g} of {cfg.budget:g} full evaluations to run"
    if trains_candidates(cfg.objective):
        per_cost = stored.seconds_per_cost() if stored is not None else None
        if per_cost is None and objective.trainer.accelerator == "cpu":
            # Timed here on the CPU, so only for CPU training: it would say nothing of a GPU's speed.
            per_cost = estimate_epoch_seconds(space, objective.dataset, seed=cfg.seed) * objective.fidelity.hi_epochs
        if per_cost is not None:
            at_once = max(1, int(cfg.executor.get("max_workers") or 1))  # local and process executors' workers
            plan += f", about {format_duration(per_cost)} each: roughly {format_duration(left * per_cost / at_once)} of training"
            plan += f", {at_once} at once" if at_once > 1 else ""
    if pretraining and not zero_cost_ready(space, cfg.zero_cost, has_dataset=getattr(objective, "dataset", None) is not None):
        plan += f", after the zero-cost metrics of {cfg.zero_cost.num_samples} architectures (computed once, then cached)"
    log.info(plan)
    return spent


def _stored_reference(cfg: DictConfig, output: Path) -> dict[str, Any] | None:
    """The reference's record in ``reference.json`` when it holds this reference under this
    search's settings (``None``: it must be evaluated)."""
    path = output / "reference.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    matches = stored.get("architecture") == cfg.get("reference") and stored.get("fingerprint") == config_fingerprint(search_identity(cfg))
    return stored if matches else None


class ReferenceBeside:
    """The reference architecture, trained in a worker process of its own once the search has
    started its last candidates (its cost reached ``start_at``), on a core they leave idle,
    instead of alone after the search."""

    def __init__(self, pool: Pool, text: str, encoding: Encoding, start_at: float) -> None:
        self.pool, self.text, self.encoding, self.start_at = pool, text, encoding, start_at
        self.started = False

    def maybe_start(self, history: SearchHistory) -> None:
        """Start the reference's training when ``history`` has spent ``start_at``."""
        if not self.started and history.cost >= self.start_at:
            log.info("training the reference architecture %s beside the search's last candidates", self.text)
            self.pool.submit(self.text, Trial(self.encoding))
            self.started = True

    def result(self) -> Evaluation | None:
        """The reference's evaluation, once trained; ``None`` if it never started."""
        return self.pool.wait()[0].evaluation if self.started else None


@contextmanager
def reference_beside_search(cfg: DictConfig, space: SearchSpace, objective: Any, executor: Any, output: Path, over_budget: bool, priors: list[Encoding]) -> Iterator[ReferenceBeside | None]:
    """With more than one local worker, a :class:`ReferenceBeside` (``None``: the reference
    trains after the search, if at all): read by :func:`reference_value`, stopped with the search."""
    text = cfg.get("reference")
    local_workers = executor.parallelism if isinstance(executor, LocalExecutor) else 1
    if not text or local_workers < 2 or getattr(objective, "needs_own_process", False) or _stored_reference(cfg, output) is not None or space.parse(text) in priors:
        yield None
        return
    with ProcessExecutor(max_workers=1, retries=0).pool(objective.objective if over_budget else objective) as pool:
        # Once the search's cost reaches this, its last candidates run and a worker is free.
        yield ReferenceBeside(pool, text, space.parse(text), float(cfg.budget) - (local_workers - 1))


def reference_value(
    cfg: DictConfig, space: SearchSpace, objective: Any, history: SearchHistory, output: Path, over_budget: bool = False, beside: ReferenceBeside | None = None
) -> tuple[str, float] | None:
    """The value of the configured reference architecture (``reference``), evaluated once like a
    candidate; ``over_budget``: it breaks a budget, and is trained outside it, as the yardstick;
    ``beside``: its training beside the search, if that started (:func:`reference_beside_search`)."""
    text = cfg.get("reference")
    if not text:
        return None
    encoding = space.parse(text)
    for trial, evaluation in zip(history.trials, history.evaluations):
        if trial.encoding == encoding and trial.fidelity == "hi" and evaluation.status == "ok":
            return text, evaluation.value
    stored = _stored_reference(cfg, output)
    if getattr(objective, "needs_own_process", False):
        log.info("the reference architecture is not evaluated: this trainer trains in processes of its own")
        stored = stored or {}
    if stored is None:
        evaluation = beside.result() if beside is not None else None
        if evaluation is None:
            log.info("evaluating the reference architecture %s", text)
            evaluation = (objective.objective if over_budget else objective).evaluate(encoding, "hi")
        stored = {"architecture": text, "fingerprint": config_fingerprint(search_identity(cfg)), "value": evaluation.value, "status": evaluation.status}
        (output / "reference.json").write_text(json.dumps(stored))
    return (text, float(stored["value"])) if stored.get("status") == "ok" else None


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) the configured search; write the store, ``summary.json`` and PNG reports.

    The run directory is held for the whole run (:class:`nas.store.RunLock`): a second
    search started on it is refused before it computes anything.
    """
    whole_number("seed", cfg.seed)
    positive_number("budget (in full evaluations)", cfg.budget)
    whole_number("workers", cfg.get("workers", 1), minimum=1)
    whole_number("zero_cost.processes", cfg.zero_cost.get("processes", 1), minimum=1)
    configure_threads(None if cfg.threads is None else whole_number("threads", cfg.threads, minimum=1))
    output = Path(cfg.output_dir)
    created = not output.exists()
    try:
        with RunLock(output):
            return _run_held(cfg, output)
    except NASError:
        # Refused before anything ran: leave no run directory behind, only to hold the lock.
        if created and [p.name for p in output.iterdir()] == [RunLock.FILE]:
            (output / RunLock.FILE).unlink()
            output.rmdir()
        raise


def _run_held(cfg: DictConfig, output: Path) -> dict[str, Any]:
    """:func:`run`, with the run directory ``output`` held."""
    space = space_from_config(cfg)
    objective = build_objective(cfg, space)
    goals = goals_of(cfg)
    if goals is not None:
        objective = cost_aware_objective(cfg, objective, space, goals)
        log.info("goals: %s", goals.describe())
    reference_breach = None
    if cfg.get("reference"):
        reference = space.parse(cfg.reference)  # a malformed reference must stop the run before the search, not after
        if isinstance(objective, CostAwareObjective) and (reference_breach := objective.over_budget(reference)[1]) is not None:
            log.warning("the reference architecture is over the budget (%s): it is trained outside the budget, as the yardstick, and is not a candidate", reference_breach)
    priors = parse_priors(space, cfg.get("initial"))
    if trains_candidates(cfg.objective):
        check_image_size(cfg, space)
    pretraining = cfg.strategy.get("pretraining", "none") != "none"
    spent = announce_search(cfg, space, objective, output, pretraining)
    zero_cost = None
    if pretraining:
        datamodule = getattr(objective, "dataset", None)
        batch = dataset_batch(datamodule, int(cfg.zero_cost.get("proxy_batch_size", 32))) if datamodule is not None else None
        zero_cost, _ = zero_cost_from_config(space, cfg.zero_cost, dataset_batch=batch)
    strategy: Strategy
    if goals is None:
        strategy = instantiate_strategy(cfg.strategy, space, cfg.seed, zero_cost)
    elif ".multiobjective." not in str(cfg.strategy.get("_target_", "")):
        raise NASError("A search with objectives or constraints needs a strategy for fronts and budgets: strategy=mobo, nsga2 or random_front.")
    else:
        known = KnownCosts(space, {n: objective.columns[n] for n in goals.known}) if goals.known else None
        strategy = instantiate_front_strategy(cfg.strategy, space, cfg.seed, goals, known, zero_cost)
    # A trained network's twins (the same function, nas.space.SearchSpace.function_keys) are
    # never trained again: the search reuses the result, and the strategy does not suggest them.
    reuse_twins = trains_candidates(cfg.objective)
    if reuse_twins:
        strategy.skip_twins = True
    strategy.pruning = build_pruning(**(cfg.get("pruning") or {}))
    if priors:
        strategy = PriorsFirst(strategy, priors, whole_number("initial_neighbours", cfg.get("initial_neighbours", 0)))  # type: ignore[assignment]
    logger = hydra.utils.instantiate(cfg.logger)
    logger.start(OmegaConf.to_container(cfg, resolve=True), output)

    best = float("-inf")
    progress = SearchProgress(cfg.budget, spent, objective.fidelity.hi_epochs if trains_candidates(cfg.objective) else None)
    if getattr(objective, "on_epoch", False) is None:
        objective.on_epoch = progress.on_epoch  # the candidate training in this process shows its epochs

    def on_evaluation(history: SearchHistory) -> None:
        nonlocal best
        index = len(history.evaluations) - 1
        trial, evaluation = history.trials[index], history.evaluations[index]
        record = EvaluationRecord.from_evaluation(index, space.to_string(trial.encoding), trial.fidelity, evaluation, history.seconds[index])
        if record.competes:
            best = max(best, record.value)
        logger.log_evaluation(record, best, history.cost)
        progress.on_evaluation(record.cost, best)
        if reference_run is not None:
            reference_run.maybe_start(history)
        log.info("evaluation %d (%s, %s): %s %.4g, best %.4g, cost %.2f", record.index, record.encoding, record.fidelity, record.status, record.value, best, history.cost)

    spearman_points: list[tuple[int, float]] = []
    reference_run: ReferenceBeside | None  # bound by the search's with-block below, before any evaluation

    def on_batch(history: SearchHistory) -> None:
        # How well the surrogate, as it stands before its next update, ranks what was measured.
        full = [(t.encoding, e.value) for t, e in zip(history.trials, history.evaluations) if t.fidelity == "hi" and e.status == "ok"]
        rho = surrogate_rank_correlation(strategy, [enc for enc, _ in full], [v for _, v in full])
        if rho is not None:
            spearman_points.append((len(history.evaluations), rho))
            logger.log_surrogate(len(history.evaluations), rho)
        if goals is not None and (plot := front_plot(records_of(space, history), goals, output / FRONT_PNG)) is not None:
            logger.log_plot("front", plot, len(history.evaluations))  # the front as it stands

    # A refused store must not start a Ray instance, and a refused executor must not write a store.
    Store.verify(output / "store.sqlite", search_identity(cfg))
    with (
        hydra.utils.instantiate(cfg.executor) as executor,
        Store(output / "store.sqlite", search_identity(cfg)) as store,
        bars_with_logging(),
        reference_beside_search(cfg, space, objective, executor, output, reference_breach is not None, priors) as reference_run,
    ):
        try:
            history = run_search(strategy, objective, cfg.budget, store=store, on_evaluation=on_evaluation, on_batch=on_batch, executor=executor, reuse_twins=reuse_twins)
        finally:
            progress.close()
        if history.replayed:
            log.info("resumed: %d evaluations read back from %s", history.replayed, output / "store.sqlite")
        best = history.best()
        reference = reference_value(cfg, space, objective, history, output, reference_breach is not None, reference_run) if best else None
    records = records_of(space, history)
    summary: dict[str, Any] = {
        "best_architecture": space.to_string(best[0].encoding) if best else None,
        "best_encoding": list(best[0].encoding) if best else None,
        "best_value": best[1].value if best else None,
        "evaluations": len(records),
        "failed": sum(r.status == "failed" for r in records),
        "resumed_evaluations": history.replayed,
        "cost": history.cost,
        "median_value": median_value(records),
        "reference": {"architecture": reference[0], "value": reference[1], "over_budget": reference_breach} if reference else None,
        "twins_reused": sum(TWIN_OF in e.metrics for e in history.evaluations),
        "pruned": sum(e.status == PRUNED for e in history.evaluations),
        "winner_origin": prior_origin(strategy, best[0].encoding) if best else None,
    }
    front = front_of(records, goals) if goals is not None else None
    if goals is not None:
        summary["goals"] = goals.describe()
        summary["front"] = front
        summary["pareto_front"] = [row["architecture"] for row in front or []]  # what status and export read
    pngs = write_report(output, records, spearman_points)
    if goals is not None and (plot := front_plot(records, goals, output / FRONT_PNG)) is not None:
        pngs.append(plot)
    logger.finish(records, records[history.trials.index(best[0])] if best else None, pngs)
    (output / "summary.json").write_text(json.dumps({**summary, "config": OmegaConf.to_container(cfg, resolve=True)}, indent=1, default=str))
    if best is None:
        print(f"No evaluation succeeded ({summary['failed']} failed); see {output / 'store.sqlite'}.")
    else:
        print(f"Best architecture: {summary['best_architecture']}")
        print(f"Best value: {summary['best_value']:.4f} after {summary['evaluations']} evaluations (cost {summary['cost']:g} full evaluations)")
        for line in search_gain_lines(records[history.trials.index(best[0])], records, reference):
            print(line)
        if reference and reference_breach:
            print(f"  the reference is over the budget ({reference_breach}); the search kept within it")
        if priors:
            found = {PRIOR: "is one of the priors", NEAR_PRIOR: "is a neighbour of a prior"}.get(summary["winner_origin"], "was found by the search, not given as a prior")
            print(f"  the winner {found} (initial={len(priors)} priors)")
        if summary["pruned"]:
            print(f"  {summary['pruned']} runs were pruned ({cfg.pruning.rule} rule): stopped after their first epochs, charged only those")
        if summary["twins_reused"]:
            print(f"  {summary['twins_reused']} suggestions were twins of trained networks (the same function): their results were reused, not trained again")
    if goals is not None:
        print(f"Pareto front ({goals.describe()}): {len(front or [])} architectures" if front else f"No evaluation meets {goals.describe()}.")
        if front:
            print(front_table(front, goals))
    print(f"Run directory: {output.resolve()}")
    return summary


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    sys.argv = quote_comparisons(sys.argv)
    main()
