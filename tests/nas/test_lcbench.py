"""The LCBench surrogate objective: YAHPO Gym's reference values on raw configurations, the
mixed space's codes reaching the model in its column order, continuation, and the sentences
of a wrong task, space or epoch."""
from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from nas.errors import NASError
from nas.fidelity import FidelitySchedule
from nas.paths import resolve_path
from nas.spaces import build_space
from nas.spaces.hparams import Float, Integer, MixedSpace

pytest.importorskip("onnxruntime")

from nas.objectives.lcbench import OUTPUTS, TASKS, VARIABLES, LCBenchObjective  # noqa: E402
from nas.objectives.onnx_surrogate import OnnxCurveObjective  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LCBENCH_EPOCHS = FidelitySchedule(hi_epochs=52, lo_epochs=13)


def lcbench_space(extra: bool = False) -> MixedSpace:
    """The 7 LCBench variables with YAHPO Gym's bounds, in ConfigSpace's (alphabetical) order,
    not the model's: the objective must reorder them by name."""
    variables = [
        Integer("batch_size", 16, 512, log=True),
        Float("learning_rate", 1e-4, 0.1, log=True),
        Float("max_dropout", 0.0, 1.0),
        Integer("max_units", 64, 1024, log=True),
        Float("momentum", 0.1, 0.99),
        Integer("num_layers", 1, 5),
        Float("weight_decay", 1e-5, 0.1),
    ]
    if extra:
        variables.insert(0, Integer("warmup", 0, 5))
    return MixedSpace(variables, label="lcbench")


@pytest.fixture(scope="module")
def space() -> MixedSpace:
    return lcbench_space()


@pytest.fixture(scope="module")
def reference() -> dict[str, object]:
    return json.loads(resolve_path("package://lcbench/reference.json").read_text())


@pytest.fixture
def objective(space: MixedSpace) -> LCBenchObjective:
    return LCBenchObjective(space, 3945, LCBENCH_EPOCHS)


def test_predict_values_reproduces_yahpo_gym(space: MixedSpace, reference: dict[str, object]) -> None:
    assert tuple(reference["cont_order"]) == ("epoch", *VARIABLES)  # type: ignore[arg-type]
    assert tuple(reference["y_names"]) == OUTPUTS  # type: ignore[arg-type]
    rows = reference["rows"]
    checked = 0
    for task in reference["tasks"]:  # type: ignore[union-attr]
        objective = LCBenchObjective(space, task)
        mine = [r for r in rows if r["config"]["OpenML_task_id"] == task]  # type: ignore[union-attr, index]
        values = np.array([[r["config"][k] for k in VARIABLES] for r in mine])
        epochs = torch.tensor([int(r["config"]["epoch"]) for r in mine])
        expected = np.array([[r["outputs"][k] for k in OUTPUTS] for r in mine])
        # Singly, the first 5 rows of each task (epochs 1, 13, 52 of 5 configurations): exact.
        for i in range(15):
            assert {1, 13, 52} >= {int(epochs[i])}
            single = objective.predict_values(values[i : i + 1], int(epochs[i]))[0]
            assert single[1] == pytest.approx(expected[i, 1], abs=1e-3)
            np.testing.assert_allclose(single, expected[i], rtol=1e-5, atol=1e-5)
            checked += 1
        # In one batch, all 300 rows of the task: summation order moves val_accuracy by < 1e-3.
        batch = objective.predict_values(values, epochs)
        np.testing.assert_allclose(batch[:, 1], expected[:, 1], atol=1e-3)
    assert checked == 90


def test_evaluate_feeds_the_spaces_values_in_the_models_order(reference: dict[str, object]) -> None:
    space = lcbench_space(extra=True)  # an unread variable first, the rest alphabetical
    objective = LCBenchObjective(space, "34539", LCBENCH_EPOCHS)
    assert objective.task == 34539 and isinstance(objective, OnnxCurveObjective)
    configs = [r["config"] for r in reference["rows"][::60]]  # type: ignore[index]
    codes = torch.tensor([space.from_config({"warmup": 2, **{k: c[k] for k in VARIABLES}}) for c in configs])
    ordered = space.values(codes)[:, [space.variable_names.index(k) for k in VARIABLES]]
    for enc, row in zip(codes.tolist(), ordered.numpy()):
        described = space.describe(tuple(enc))
        assert np.allclose(row, [float(described[k]) for k in VARIABLES])  # type: ignore[arg-type]
        for fidelity in ("1", "13", "hi"):
            epochs = objective.epochs_of(fidelity)
            expected = objective.predict_values(row[None], epochs)[0, 1]
            assert objective.evaluate(tuple(enc), fidelity).value == pytest.approx(float(expected), abs=1e-3)
    batched = objective.accuracy(codes, 13)
    assert batched.dtype == torch.float64 and batched.shape == (len(configs),)
    np.testing.assert_allclose(batched.numpy(), objective.predict_values(ordered.numpy(), 13)[:, 1], atol=1e-3)


def test_continuation_charges_only_the_extra_epochs(space: MixedSpace, objective: LCBenchObjective) -> None:
    enc = tuple(space.sample(1, torch.Generator().manual_seed(1))[0].tolist())
    first = objective.evaluate(enc, "lo")
    assert first.cost == pytest.approx(13 / 52)
    full = objective.evaluate(enc, "hi")
    assert full.cost == pytest.approx(39 / 52)
    assert full.metrics["value_at_epoch_13"] == pytest.approx(first.value)
    assert set(full.metrics) == {f"value_at_epoch_{k}" for k in range(1, 53)}
    assert objective.evaluate(enc, "20").cost == 0.0
    assert objective.planned_cost("lo") == pytest.approx(13 / 52)
    fresh = LCBenchObjective(space, 3945, LCBENCH_EPOCHS, continuation=False)
    fresh.evaluate(enc, "lo")
    assert fresh.evaluate(enc, "hi").cost == 1.0


def test_a_stop_rule_stops_the_run_after_the_epoch_it_names_and_charges_only_those(space: MixedSpace, objective: LCBenchObjective) -> None:
    """A pruning rule's gate is asked after each epoch, as in a training run: the run stops
    where it says (status pruned, its last epoch's value, charged the epochs run); continued
    later it pays only the rest and is not asked again about the epochs it passed."""
    from nas.trial import PRUNED, EpochGate, pruned_epoch

    enc = tuple(space.sample(1, torch.Generator().manual_seed(2))[0].tolist())
    curve = objective.curve(enc)
    # At epoch 3 every other run was better; at epoch 1 every other run was worse.
    gate = EpochGate("asha", {1: (float(curve[0]) - 1.0,), 3: (float(curve[2]) + 1.0,)}, quantile=0.5)
    pruned = objective.evaluate(enc, "hi", stop_rule=gate)
    assert pruned.status == PRUNED and pruned.value == pytest.approx(float(curve[2]))
    assert pruned.cost == pytest.approx(3 / 52) and set(pruned.metrics) == {"epochs_run", *(f"value_at_epoch_{k}" for k in (1, 2, 3))}
    assert pruned_epoch(pruned) == 3
    assert "after epoch 3" in pruned.error
    asked: list[int] = []
    resumed = objective.evaluate(enc, "hi", stop_rule=lambda epoch, value: asked.append(epoch))
    assert resumed.status == "ok" and resumed.cost == pytest.approx(49 / 52) and asked == list(range(4, 52))
    # A resumed search restores the pruned run at the epochs it reached.
    fresh = LCBenchObjective(space, 3945, LCBENCH_EPOCHS)
    fresh.restore(enc, "hi", pruned)
    assert fresh.evaluate(enc, "hi").cost == pytest.approx(49 / 52)


def test_an_unknown_task_or_a_space_without_the_variables_is_refused(space: MixedSpace) -> None:
    with pytest.raises(NASError, match=r"^OpenML task 99 is not in the LCBench surrogate; valid tasks include 3945, 7593, 34539, … \(34 in all\)\.$"):
        LCBenchObjective(space, 99)
    with pytest.raises(NASError, match="OpenML task abc is not in the LCBench surrogate"):
        LCBenchObjective(space, "abc")
    assert len(TASKS) == 34
    partial = MixedSpace([Integer("batch_size", 16, 512, log=True), Float("learning_rate", 1e-4, 0.1, log=True)], label="partial")
    with pytest.raises(NASError, match=r"search space 'partial' lacks momentum, weight_decay, num_layers, max_units, max_dropout; use searchspace=lcbench\.$"):
        LCBenchObjective(partial, 3945)


def test_epochs_outside_the_benchmark_are_refused(space: MixedSpace, objective: LCBenchObjective) -> None:
    enc = tuple(space.sample(1, torch.Generator().manual_seed(2))[0].tolist())
    for epochs in ("0", "53"):
        with pytest.raises(NASError, match=r"outside 1\.\.52"):
            objective.evaluate(enc, epochs)
    with pytest.raises(NASError, match=r"^LCBench predicts epochs 1\.\.52, got 60\.$"):
        objective.predict_values(np.zeros((1, 7)), 60)
    with pytest.raises(NASError, match=r"^LCBench predicts epochs 1\.\.52, got 0\.$"):
        objective.accuracy(torch.tensor([enc]), 0)
    with pytest.raises(NASError, match=r"hi_epochs=98; use fidelity=lcbench \(or set fidelity\.hi_epochs=52\)\.$"):
        LCBenchObjective(space, 3945, FidelitySchedule(hi_epochs=98, lo_epochs=4))


def test_the_configs_build_the_objective() -> None:
    cfg = OmegaConf.create({name: OmegaConf.load(CONFIGS / name / "lcbench.yaml") for name in ("fidelity", "objective", "searchspace")})
    space = build_space(**OmegaConf.to_container(cfg.searchspace))  # type: ignore[arg-type]
    objective = hydra.utils.instantiate(cfg.objective, space=space)
    assert isinstance(objective, LCBenchObjective) and objective.task == 3945
    assert objective.fidelity.hi_epochs == 52 and objective.continuation
    assert objective.fidelity.fidelities == ("lo", "6", "17", "hi")
    codes = space.sample(64, torch.Generator().manual_seed(0))
    values = objective.accuracy(codes, 52)
    assert bool(torch.isfinite(values).all()) and float(values.std()) > 0


def test_benchmark_lcbench_compares_tasks_in_normalised_regret(tmp_path: Path) -> None:
    """benchmark=lcbench with tasks=[...]: one harness run per task, then the regret over tasks,
    each seed averaged over the tasks first; a task listed twice is refused in one sentence."""
    from hydra import compose, initialize_config_dir

    from nas.bench.tasks import run_task_benchmark

    def config(*overrides: str):  # noqa: ANN202
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose("benchmark", overrides=["benchmark=lcbench", "seeds=2", "budget=3", "workers=1", "regret_samples=2000", "agreement_epochs=[]", "cost_checkpoints=[1,3]", "include=[random,hyperband]", f"output_dir={tmp_path}", *overrides])

    results = run_task_benchmark(config("tasks=[3945,34539]"))
    report = json.loads((tmp_path / "regret.json").read_text())
    assert set(results) == {3945, 34539} and (tmp_path / "task_3945" / "records.jsonl").is_file() and (tmp_path / "regret.png").is_file()
    per_task = report["per_task"]["random"]
    for seed, row in enumerate(report["mean_over_tasks"]["random"]):
        assert row == pytest.approx([(per_task["3945"][seed][i] + per_task["34539"][seed][i]) / 2 for i in range(2)])
    assert all(r <= 1.0 for rows in per_task.values() for row in rows for r in row)
    assert report["mean_over_tasks"]["random"][0][1] <= report["mean_over_tasks"]["random"][0][0]  # more budget, no worse
    with pytest.raises(NASError, match="tasks lists 3945 twice; give each task once."):
        run_task_benchmark(config("tasks=[3945,3945]"))


def test_benchmark_lcbench_prunes_the_runs_of_a_strategy_with_a_rule(tmp_path: Path) -> None:
    """pruning.<strategy> gives one strategy a stopping rule (bo_asha: asynchronous successive
    halving): some of its runs stop early, charged only their epochs, and never count as full
    evaluations; the rule's settings are part of what its stored results depend on."""
    from hydra import compose, initialize_config_dir

    from nas.bench.journal import task_fingerprint
    from nas.bench.multifidelity import RESULT_KEYS
    from nas.bench.tasks import run_task_benchmark

    def config(*overrides: str):  # noqa: ANN202
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose("benchmark", overrides=["benchmark=lcbench", "tasks=[3945]", "seeds=1", "budget=6", "workers=1", "regret_samples=2000", "agreement_epochs=[]", "cost_checkpoints=[6]", "include=[bo_asha]", "strategies.bo_asha.initial_points=30", "strategies.bo_asha.pool_size=500", f"output_dir={tmp_path}", *overrides])

    cfg = config()
    run_task_benchmark(cfg)
    record = json.loads((tmp_path / "task_3945" / "results.json").read_text())["strategies"]["bo_asha"][0]
    assert record["full_evaluations"] < record["evaluations"]
    assert record["cost"] >= 6 and record["cost"] < record["evaluations"]
    fingerprint = task_fingerprint(cfg, "bo_asha", RESULT_KEYS, ("strategies", "peers"))
    assert fingerprint != task_fingerprint(config("pruning.bo_asha.eta=2"), "bo_asha", RESULT_KEYS, ("strategies", "peers"))
    assert task_fingerprint(cfg, "bo", RESULT_KEYS, ("strategies", "peers")) == task_fingerprint(cfg, "bo", RESULT_KEYS, ("strategies", "peers"), additions=())
