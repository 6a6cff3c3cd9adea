"""Pruning through the callback loop: the rules, the gate each run carries, Lightning stopping a
run between epochs (one process and DDP), pruned runs stored with their reason and charged the
epochs they ran, exact resume, continuation from a pruned run's checkpoint, Optuna's pruner
through its own Lightning callback, and bad settings refused in one sentence."""
from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from nas.errors import NASError
from nas.executors import ProcessExecutor
from nas.fidelity import FidelitySchedule, epoch_metric_key
from nas.objectives.table import TableObjective
from nas.objectives.training import TrainingObjective
from nas.report.status import read_run, status_report
from nas.run import run
from nas.search import SearchHistory, run_search
from nas.space import Encoding
from nas.spaces.nb201 import NB201Space
from nas.store import Store
from nas.strategies import BayesianOptimization, RandomSearch
from nas.strategies.pruning import (
    AsynchronousHalving,
    MedianStopping,
    build_pruning,
    impute_pruned,
)
from nas.surrogate.model import EnsembleSurrogate
from nas.train import DigitsDataModule, TrainerSettings, train_and_evaluate
from nas.train.reference import SmallCNN
from nas.trial import PRUNED, EpochGate, Evaluation, StopRule, Trial
from tests.nas.tiny_runs import TINY_TRAINING

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")
REPO = Path(__file__).resolve().parents[2]


class CurveObjective:
    """NAS-Bench-201's CIFAR-10 accuracy reached along a learning curve, one value per epoch,
    honouring a stop rule between epochs as the training objective does: a deterministic
    stand-in for training, so that two searches can be compared row for row."""

    reports_epochs = True

    def __init__(self, table: TableObjective, epochs: int = 4) -> None:
        self.table = table
        self.fidelity = FidelitySchedule(hi_epochs=epochs)

    def planned_cost(self, fidelity: str) -> float:
        return 1.0

    def evaluate(self, encoding: Encoding, fidelity: str = "hi", stop_rule: StopRule | None = None) -> Evaluation:
        final = self.table.evaluate(encoding).value
        epochs = self.fidelity.hi_epochs
        metrics: dict[str, float] = {}
        for epoch in range(1, epochs + 1):
            # Slower starters (odd encodings) catch up by the end: early ranks are not final ranks.
            value = final * (1 - 0.5 ** (epoch + (sum(encoding) % 2)))
            metrics[epoch_metric_key(epoch)] = value
            reason = stop_rule(epoch, value) if stop_rule is not None and epoch < epochs else None
            if reason is not None:
                metrics["epochs_run"] = float(epoch)
                return Evaluation(value=value, cost=epoch / epochs, status=PRUNED, metrics=metrics, error=reason)
        metrics["epochs_run"] = float(epochs)
        return Evaluation(value=final, cost=1.0, metrics=metrics)


def _rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT batch, position, architecture, status, value, cost, error, attempts FROM evaluations ORDER BY batch, position").fetchall()


# ---------------------------------------------------------------------- rules and gates
def test_the_median_rule_stops_below_the_median_of_completed_runs_only_after_warmup() -> None:
    rule = MedianStopping(warmup_epochs=2, min_runs=3)
    completed = [Evaluation(v, metrics={"value_at_epoch_1": v - 20, "value_at_epoch_2": v - 10, "value_at_epoch_3": v}) for v in (70.0, 80.0, 90.0)]
    stopped = Evaluation(5.0, status=PRUNED, metrics={"value_at_epoch_1": 1.0, "value_at_epoch_2": 5.0})
    rule.observe([Trial((0,))] * 4, [*completed, stopped])
    gate = rule.gate()
    assert gate is not None and sorted(gate.cutoffs) == [2]  # not epoch 1 (warm-up), not the last epoch
    assert gate.cutoffs[2] == (60.0, 70.0, 80.0)  # the pruned run does not drag the median down
    assert gate(2, 69.9) is not None and "median rule after epoch 2" in gate(2, 69.9)  # type: ignore[operator]
    assert gate(2, 70.0) is None and gate(1, 0.0) is None
    assert MedianStopping(min_runs=4).gate() is None  # nothing observed: nothing to compare with


def test_asynchronous_halving_keeps_the_top_third_of_each_rung_counting_the_run_itself() -> None:
    rule = AsynchronousHalving(min_epochs=1, eta=3, min_runs=3)
    assert rule.checked_epochs(10) == [1, 3, 9]
    runs = [Evaluation(v, status=PRUNED, metrics={"value_at_epoch_1": v}) for v in (50.0, 60.0, 70.0)]
    runs.append(Evaluation(90.0, metrics={f"value_at_epoch_{k}": 70.0 + 5 * k for k in range(1, 5)}))
    rule.observe([Trial((0,))] * 4, runs)  # stopped runs count at the rung they reached
    gate = rule.gate()
    assert gate is not None and gate.include_own and gate.cutoffs == {1: (50.0, 60.0, 70.0, 75.0)}  # rung 3 holds 1 < min_runs
    assert gate(1, 71.0) is None  # 71 is in the top third of 50, 60, 70, 71, 75
    assert gate(1, 69.0) is not None and gate(1, math.nan) is not None


def test_a_gate_is_plain_data_that_survives_json() -> None:
    gate = EpochGate("asha", {1: (1.0, 2.0), 3: (4.0,)}, 2 / 3, include_own=True)
    again = EpochGate.from_dict(json.loads(json.dumps(gate.to_dict())))
    assert again == gate and again(1, 0.5) == gate(1, 0.5)


def test_pruned_runs_join_the_surrogate_at_the_rank_they_held() -> None:
    curves = [{1: 10.0 * i, 2: 50.0 + i} for i in range(1, 6)]  # final values 51..55, same order as epoch 1
    low, high, unseen = impute_pruned([(1, 5.0), (1, 100.0), (7, 1.0)], curves, 2)
    assert low == pytest.approx(51.0) and high == pytest.approx(55.0)
    assert unseen == pytest.approx(51.0)  # no completed run reached epoch 7: the worst final value


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rule": "patience"}, r"Unknown pruning rule 'patience'; valid rules are none, median, asha\."),
        ({"rule": "median", "warmup_epochs": 0}, r"pruning.warmup_epochs must be a whole number >= 1, got 0\."),
        ({"rule": "median", "warmup_epochs": "abc"}, r"pruning.warmup_epochs must be a whole number >= 1, got 'abc'\."),
        ({"rule": "asha", "eta": 1}, r"pruning.eta must be a whole number >= 2, got 1\."),
        ({"rule": "asha", "min_epochs": -1}, r"pruning.min_epochs must be a whole number >= 1, got -1\."),
        ({"rule": "median", "min_runs": 0}, r"pruning.min_runs must be a whole number >= 1, got 0\."),
        ({"rule": "median", "rungs": 3}, r"The median pruning rule takes the settings warmup_epochs, min_runs; got rungs\."),
    ],
)
def test_bad_pruning_settings_are_one_sentence(settings: dict, message: str) -> None:
    with pytest.raises(NASError, match=message):
        build_pruning(**settings)


def test_pruning_an_objective_without_epochs_or_beyond_its_last_epoch_is_refused(nb201: NB201Space, table: TableObjective) -> None:
    strategy = RandomSearch(nb201, seed=0)
    strategy.pruning = MedianStopping()
    with pytest.raises(NASError, match=r"this objective \(TableObjective\) reports no epochs; use pruning=none"):
        run_search(strategy, table, budget=3)
    strategy.pruning = MedianStopping(warmup_epochs=4)
    with pytest.raises(NASError, match=r"checks no epoch before the last of a 4-epoch run.*warmup_epochs must be between 1 and 3"):
        run_search(strategy, CurveObjective(table, epochs=4), budget=3)
    strategy.pruning = AsynchronousHalving(min_epochs=4)
    with pytest.raises(NASError, match=r"min_epochs must be between 1 and 3"):
        run_search(strategy, CurveObjective(table, epochs=4), budget=3)


# ---------------------------------------------------------------------- Lightning
def test_the_callback_stops_a_lightning_run_after_the_epoch_the_rule_names() -> None:
    digits, cpu = DigitsDataModule(image_size=8, batch_size=32), TrainerSettings(num_threads=1)
    asked: list[int] = []

    def stop_after_two(epoch: int, value: float) -> str | None:
        asked.append(epoch)
        assert 0.0 <= value <= 100.0  # validation accuracy in %
        return "hopeless" if epoch == 2 else None

    result = train_and_evaluate(lambda: SmallCNN(10, width=4), digits, epochs=4, trainer=cpu, stop_rule=stop_after_two)
    assert result.status == PRUNED and result.reason == "hopeless" and result.epochs_run == 2 and asked == [1, 2]
    never: list[int] = []
    full = train_and_evaluate(lambda: SmallCNN(10, width=4), digits, epochs=2, trainer=cpu, stop_rule=lambda e, v: never.append(e) or "stop")  # type: ignore[func-returns-value]
    assert full.status == PRUNED and full.epochs_run == 1 and never == [1]  # asked after epoch 1, never after the last


def _tiny_objective(tmp_path: Path, epochs: int = 3, continuation: bool = False) -> TrainingObjective:
    space = NB201Space(channels=4, cells_per_stage=1, resolution=8)
    return TrainingObjective(
        space, DigitsDataModule(image_size=8, batch_size=32), FidelitySchedule(hi_epochs=epochs), TrainerSettings(num_threads=1),
        measure_latency=False, continuation=continuation, checkpoint_dir=tmp_path / "checkpoints",
    )


def test_a_pruned_training_is_charged_its_epochs_and_continues_from_its_checkpoint(tmp_path: Path) -> None:
    objective = _tiny_objective(tmp_path, epochs=3, continuation=True)
    encoding = (3, 3, 1, 3, 1, 1)
    pruned = objective.evaluate(encoding, "hi", stop_rule=lambda epoch, value: "stop" if epoch == 1 else None)
    assert pruned.status == PRUNED and pruned.error == "stop" and pruned.cost == pytest.approx(1 / 3)
    assert pruned.metrics["epochs_run"] == 1 and pruned.value == pytest.approx(pruned.metrics["value_at_epoch_1"])
    resumed = objective.evaluate(encoding, "hi")  # promising after all: continued, paying 2 more epochs
    assert resumed.status == "ok" and resumed.cost == pytest.approx(2 / 3)
    assert resumed.metrics["value_at_epoch_1"] == pytest.approx(pruned.value) and resumed.metrics["epochs_run"] == 3


def test_a_search_with_pruning_stores_pruned_runs_and_resumes_to_the_same_store(tmp_path: Path, nb201: NB201Space, table: TableObjective) -> None:
    objective = CurveObjective(table)

    def strategy() -> RandomSearch:
        searcher = RandomSearch(nb201, seed=4)
        searcher.pruning = AsynchronousHalving(min_epochs=1, eta=2, min_runs=3)
        return searcher

    with Store(tmp_path / "whole.sqlite", {"test": "prune"}) as store:
        whole = run_search(strategy(), objective, 12, store=store)
    rows = _rows(tmp_path / "whole.sqlite")
    pruned = [r for r in rows if r[3] == PRUNED]
    assert pruned and all(r[6].startswith("pruned by the asha rule after epoch") and r[5] < 1.0 for r in pruned)
    assert whole.cost == pytest.approx(12, abs=1.0) and len(rows) > 12  # pruned runs leave room for more candidates

    class Interrupt(Exception):
        pass

    def interrupt(history: SearchHistory) -> None:
        if len(history.evaluations) == 9:
            raise Interrupt

    with Store(tmp_path / "resumed.sqlite", {"test": "prune"}) as store, pytest.raises(Interrupt):
        run_search(strategy(), objective, 12, store=store, on_evaluation=interrupt)
    with Store(tmp_path / "resumed.sqlite", {"test": "prune"}) as store:
        resumed = run_search(strategy(), objective, 12, store=store)
    assert resumed.replayed == 9
    assert _rows(tmp_path / "resumed.sqlite") == rows  # the same asks, gates, prunings and values
    assert [e.status for e in resumed.evaluations] == [e.status for e in whole.evaluations]


def test_pruning_gates_travel_to_worker_processes(nb201: NB201Space, table: TableObjective) -> None:
    encoding = (1, 2, 3, 1, 2, 3)
    value_at_2 = CurveObjective(table).evaluate(encoding).metrics["value_at_epoch_2"]
    gates = [EpochGate("median", {2: (value_at_2 + 1.0,) * 3}, 0.5), EpochGate("median", {2: (value_at_2 - 1.0,) * 3}, 0.5)]
    trials = [Trial(encoding, "hi", gate) for gate in gates]
    with ProcessExecutor(max_workers=2) as executor:
        finished = sorted(executor.run(CurveObjective(table), trials), key=lambda f: f[0])
    stopped, kept = finished[0][1], finished[1][1]
    assert stopped.status == PRUNED and stopped.metrics["epochs_run"] == 2 and stopped.error.startswith("pruned by the median rule after epoch 2")  # type: ignore[union-attr]
    assert kept.status == "ok" and kept.metrics["epochs_run"] == 4


@pytest.mark.slow  # a Ray instance of its own: minutes on a busy 2-core machine
def test_pruning_gates_travel_to_ray_tasks(nb201: NB201Space, table: TableObjective) -> None:
    pytest.importorskip("ray")
    from nas.executors import RayExecutor

    encoding = (1, 2, 3, 1, 2, 3)
    value_at_1 = CurveObjective(table).evaluate(encoding).metrics["value_at_epoch_1"]
    gate = EpochGate("asha", {1: (value_at_1 + 1.0,) * 3}, 2 / 3, include_own=True)
    with RayExecutor(num_cpus=1) as executor:
        ((_, evaluation, _),) = list(executor.run(CurveObjective(table), [Trial(encoding, "hi", gate)]))
    assert evaluation.status == PRUNED and evaluation.metrics["epochs_run"] == 1 and evaluation.cost == pytest.approx(0.25)


def test_bo_learns_from_pruned_runs_and_never_suggests_them_again(nb201: NB201Space, table: TableObjective, tiny_ensemble: dict) -> None:
    from functools import partial

    strategy = BayesianOptimization(nb201, partial(EnsembleSurrogate, **tiny_ensemble), seed=0, pretraining="none", batch_size=1, initial_points=4)
    strategy.pruning = AsynchronousHalving(min_epochs=1, eta=3, min_runs=3)
    fitted: list[tuple[int, int]] = []  # (rows fitted, full evaluations known) at each fit
    original_fit = strategy.surrogate.fit

    def fit(codes: torch.Tensor, values: torch.Tensor, *args: object, **kwargs: object) -> None:
        fitted.append((codes.shape[0], len(strategy.values)))
        assert not bool(torch.isnan(values).any())
        original_fit(codes, values, *args, **kwargs)

    strategy.surrogate.fit = fit  # type: ignore[method-assign]
    history = run_search(strategy, CurveObjective(table), 10)
    pruned = [t.encoding for t, e in zip(history.trials, history.evaluations) if e.status == PRUNED]
    assert pruned and [enc for enc, _, _ in strategy.pruned] == pruned
    assert len(set(history.encodings)) == len(history.encodings)  # a pruned run is never suggested again
    # The last fit saw every pruned run as an observation besides the full evaluations.
    assert fitted[-1][0] == fitted[-1][1] + len(pruned) or fitted[-1][0] == fitted[-1][1] + len(pruned) - 1


def test_bo_halving_design_screens_its_own_draws_and_nothing_after_them(nb201: NB201Space, table: TableObjective, tiny_ensemble: dict) -> None:
    """initial_design=halving: the random initial draws run under asynchronous successive
    halving (a rung stops a run outside the top 1 / eta of the design's values there, from
    its second value on), so they cost less than full runs; every later trial runs in full,
    and the surrogate is fitted on the full runs and the screened-out ones alike."""
    from functools import partial

    strategy = BayesianOptimization(nb201, partial(EnsembleSurrogate, **tiny_ensemble), seed=0, pretraining="none", batch_size=1, initial_points=12, initial_design="halving")
    fitted: list[int] = []
    original_fit = strategy.surrogate.fit

    def fit(codes: torch.Tensor, values: torch.Tensor, *args: object, **kwargs: object) -> None:
        fitted.append(codes.shape[0])
        original_fit(codes, values, *args, **kwargs)

    strategy.surrogate.fit = fit  # type: ignore[method-assign]
    history = run_search(strategy, CurveObjective(table, epochs=9), 8)
    statuses = [e.status for e in history.evaluations]
    assert statuses[0] == "ok" and PRUNED in statuses[:12] and PRUNED not in statuses[12:]
    assert sum(e.cost for e in history.evaluations[:12]) < 12 and len(history.evaluations) > 12
    assert all("asha rule" in e.error for e in history.evaluations[:12] if e.status == PRUNED)
    assert fitted[0] == 12  # the first fit: every draw of the design, screened out or not
    with pytest.raises(NASError, match=r"reports no epochs; use strategy.initial_design=random"):
        run_search(BayesianOptimization(nb201, partial(EnsembleSurrogate, **tiny_ensemble), seed=0, pretraining="none", initial_design="halving"), table, budget=3)
    with pytest.raises(NASError, match=r"strategy.halving_eta must be a whole number >= 2, got 1."):
        BayesianOptimization(nb201, partial(EnsembleSurrogate, **tiny_ensemble), pretraining="none", initial_design="halving", halving_eta=1)


def test_optuna_prunes_through_its_own_lightning_callback(tmp_path: Path) -> None:
    pytest.importorskip("optuna_integration")
    from nas.strategies.optuna_peer import OptunaStrategy

    objective = _tiny_objective(tmp_path, epochs=2)
    strategy = OptunaStrategy(objective.space, seed=0, pruner="median")
    with pytest.raises(NASError, match="Unknown Optuna pruner 'hyperbandd'; valid pruners are none, median"):
        OptunaStrategy(objective.space, seed=0, pruner="hyperbandd")
    history = run_search(strategy, objective, 8)
    states = [t.state.name for t in strategy.study.trials]
    pruned = [e for e in history.evaluations if e.status == PRUNED]
    assert pruned, states
    assert all(re.fullmatch(r"pruned by Optuna's MedianPruner \(Trial was pruned at epoch 0\.; Optuna counts epochs from 0\)", e.error or "") for e in pruned)
    # Optuna learns each pruned run as pruned (a re-proposed known architecture is told its value: one more COMPLETE).
    assert states.count("PRUNED") == len(pruned) and states.count("COMPLETE") >= sum(e.status == "ok" for e in history.evaluations)
    with pytest.raises(NASError, match=r"This pruning \(OptunaPruning\) works only in the search's own process; use executor=local"):
        with ProcessExecutor(max_workers=1) as executor:
            run_search(OptunaStrategy(objective.space, seed=0, pruner="median"), objective, 8, executor=executor)


# ---------------------------------------------------------------------- the command
def _config(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_nas_run_prunes_stores_the_reason_and_resumes_without_rerunning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    overrides = [*[o for o in TINY_TRAINING if not o.startswith("fidelity.")], "fidelity.hi_epochs=3", "pruning=asha", "pruning.min_runs=2", "budget=6", f"output_dir={tmp_path / 'run'}"]
    summary = run(_config(*overrides))
    rows = _rows(tmp_path / "run" / "store.sqlite")
    pruned = [r for r in rows if r[3] == PRUNED]
    assert pruned and summary["pruned"] == len(pruned) and summary["failed"] == 0
    assert all(r[5] == pytest.approx(1 / 3) and "asha rule after epoch 1" in r[6] for r in pruned)
    assert summary["cost"] == pytest.approx(sum(r[5] for r in rows)) and summary["best_architecture"] not in {r[2] for r in pruned}
    assert "runs were pruned (asha rule)" in capsys.readouterr().out
    assert status_report(read_run(tmp_path / "run")).pruned == len(pruned)
    again = run(_config(*overrides))
    assert again["resumed_evaluations"] == len(rows) and _rows(tmp_path / "run" / "store.sqlite") == rows
    with pytest.raises(NASError, match=r"pruning.eta must be a whole number >= 2, got 0"):
        run(_config(*overrides[:-1], "pruning.eta=0", f"output_dir={tmp_path / 'bad'}"))
    with pytest.raises(NASError, match=r"TableObjective\) reports no epochs"):
        run(_config("searchspace=nb201", "objective=table", "strategy=random", "pruning=median", f"output_dir={tmp_path / 'table'}"))


def test_an_unknown_pruning_rule_lists_the_valid_ones(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled", "NAS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "nas.run", "pruning=patience", f"output_dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "Could not find 'pruning/patience'" in done.stderr and all(rule in done.stderr for rule in ("asha", "median", "none"))


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch.distributed as dist
    from nas.train import DigitsDataModule, TrainerSettings, train_and_evaluate
    from nas.train.reference import SmallCNN

    out = Path(sys.argv[1])

    def rule(epoch, value):
        # Asked on rank 0 alone: a rank 1 that asked would say "go on", and hang the other.
        with open(out / f"asked-rank{dist.get_rank()}.txt", "a") as f:
            f.write(f"{epoch}\\n")
        return "stop on rank 0" if epoch == 1 else None

    settings = TrainerSettings(accelerator="cpu", devices=2, strategy="ddp")
    result = train_and_evaluate(lambda: SmallCNN(10, width=4), DigitsDataModule(image_size=8, batch_size=32), epochs=3, trainer=settings, stop_rule=rule)
    (out / f"rank{result.global_rank}.json").write_text(json.dumps(result.to_dict()))
    """
)


@pytest.mark.slow
def test_under_ddp_the_decision_is_made_on_rank_0_and_stops_every_rank(tmp_path: Path) -> None:
    script = tmp_path / "prune.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["status"] for r in ranks] == [PRUNED, PRUNED] and [r["epochs_run"] for r in ranks] == [1, 1]
    assert ranks[1]["reason"] == "stop on rank 0"  # the reason reached rank 1 with the decision
    assert (tmp_path / "asked-rank0.txt").read_text() == "1\n" and not (tmp_path / "asked-rank1.txt").exists()


def test_a_schema_2_store_takes_pruned_runs_after_its_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    config = {"test": "upgrade"}
    with Store(path, config) as store:
        (row,) = store.ask(0, 1, 0, [Trial((1, 2, 3, 4, 0, 1))], ["a"])
        store.finish(row, Evaluation(90.0), 1.0, 0, 0)
    with sqlite3.connect(path) as db:  # what a schema-2 store looked like: no 'pruned' status allowed
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'evaluations'").fetchone()[0]
        db.execute("ALTER TABLE evaluations RENAME TO e2")
        db.execute(sql.replace(", 'pruned'", ""))
        db.execute("INSERT INTO evaluations SELECT * FROM e2")
        db.execute("DROP TABLE e2")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    with Store(path, config) as store:
        (row,) = store.ask(1, 1, 1, [Trial((0, 0, 0, 0, 0, 1))], ["b"])
        store.finish(row, Evaluation(40.0, cost=0.25, status=PRUNED, error="pruned"), 1.0, 1, 1)
        assert [(r.status, r.evaluation.value) for r in store.rows()] == [("ok", 90.0), (PRUNED, 40.0)]  # type: ignore[union-attr]
