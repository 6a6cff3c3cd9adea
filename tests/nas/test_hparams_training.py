"""Searched training hyperparameters applied for real: the training objective trains each
candidate of a product space with its own recipe, and ``nas.export`` retrains the winner with it."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import models
import nas.export
from nas.errors import NASError
from nas.export import export_run
from nas.fidelity import FidelitySchedule, epoch_metric_key
from nas.objectives.training import APPLIED_HYPERPARAMETERS, TrainingObjective
from nas.run import run
from nas.space import Encoding
from nas.spaces import MixedSpace, ProductSpace
from nas.spaces.nb201 import NB201Space
from nas.train import DigitsDataModule, ImageClassificationDataModule, TrainerSettings
from nas.train.data import DataSplits, RunData
from tests.nas.tiny_runs import TINY_TRAINING

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")
ARCHITECTURE: Encoding = (3, 3, 1, 3, 1, 1)
RECIPE = {
    "learning_rate": {"type": "float", "lower": 1.0e-4, "upper": 0.1, "log": True},
    "batch_size": {"type": "int", "lower": 8, "upper": 64, "log": True},
    "epochs": {"type": "int", "lower": 1, "upper": 3},
    "augment_strength": {"type": "float", "lower": 0.0, "upper": 1.0},
}
#: The recipe every candidate below starts from; each test changes one hyperparameter.
BASE = {"learning_rate": 1.0e-2, "batch_size": 32, "epochs": 1, "augment_strength": 0.0}


def _objective(variables: dict[str, Any] = RECIPE, **options: Any) -> TrainingObjective:
    space = ProductSpace(NB201Space(channels=4, cells_per_stage=1, resolution=8), MixedSpace(variables))
    data = DigitsDataModule(image_size=8, batch_size=32, train_samples=200)
    settings = {"fidelity": FidelitySchedule(hi_epochs=3), "trainer": TrainerSettings(num_threads=1), "measure_latency": False, "continuation": False, **options}
    return TrainingObjective(space, data, **settings)


@pytest.fixture(scope="module")
def objective() -> TrainingObjective:
    return _objective()


def _candidate(objective: TrainingObjective, **changes: Any) -> Encoding:
    return ARCHITECTURE + objective.space.hparams.from_config({**BASE, **changes})  # type: ignore[attr-defined]


def test_the_learning_rate_is_applied_and_recorded(objective: TrainingObjective) -> None:
    slow, fast = _candidate(objective, learning_rate=1.0e-3), _candidate(objective, learning_rate=5.0e-2)
    first, second = objective.evaluate(slow), objective.evaluate(fast)
    assert first.metrics["train_loss"] != second.metrics["train_loss"]
    for encoding, evaluation in ((slow, first), (fast, second)):
        applied = objective.space.hyperparameters(encoding)  # type: ignore[attr-defined]
        assert evaluation.metrics["hp_learning_rate"] == pytest.approx(applied["learning_rate"])
        assert objective.recipe(encoding).optimizer.lr == applied["learning_rate"]  # type: ignore[union-attr]
    assert objective.optimizer.lr not in (first.metrics["hp_learning_rate"], second.metrics["hp_learning_rate"])
    # The recipe is in the encoding: a copy sent to a worker process trains the same run.
    copy = pickle.loads(pickle.dumps(objective))
    assert copy.evaluate(fast).metrics["train_loss"] == pytest.approx(second.metrics["train_loss"], rel=1e-5)


def test_a_candidate_trains_its_own_epochs_and_is_charged_them(objective: TrainingObjective) -> None:
    two, three = objective.evaluate(_candidate(objective, epochs=2)), objective.evaluate(_candidate(objective, epochs=3))
    assert {k for k in two.metrics if k.startswith("value_at_epoch")} == {epoch_metric_key(1), epoch_metric_key(2)}
    assert {k for k in three.metrics if k.startswith("value_at_epoch")} == {epoch_metric_key(e) for e in (1, 2, 3)}
    assert two.cost == pytest.approx(2 / 3) and three.cost == pytest.approx(1.0)
    assert two.metrics["epochs_run"] == 2 and two.metrics["hp_epochs"] == 2
    # Searched epochs are full evaluations: a multi-fidelity strategy is refused before it starts.
    assert objective.planned_cost("hi") == 1.0
    with pytest.raises(NASError, match="evaluated at full fidelity only, not at '1'"):
        objective.planned_cost("1")
    with pytest.raises(NASError, match="evaluated at full fidelity only"):
        objective.evaluate(_candidate(objective), "2")


def test_the_batch_size_reaches_the_training_loader(objective: TrainingObjective) -> None:
    samples = len(objective.dataset.splits.train)
    for batch_size in (16, 50):
        evaluation = objective.evaluate(_candidate(objective, batch_size=batch_size, epochs=2))
        assert evaluation.metrics["steps"] == 2 * (samples // batch_size)  # the last partial batch is dropped
        assert evaluation.metrics["hp_batch_size"] == batch_size
    assert objective.dataset.batch_size == 32  # the shared data module is left as it was


def test_the_augmentation_strength_augments_training_batches_only(objective: TrainingObjective) -> None:
    source = objective.dataset
    batch = next(iter(source.train_dataloader()))
    calm, strong = RunData(source, augment_strength=0.0), RunData(source, batch_size=16, augment_strength=1.0)
    for data in (calm, strong):
        data.trainer = SimpleNamespace(training=True)  # type: ignore[assignment]
    assert calm.on_after_batch_transfer(batch, 0) is batch
    images, labels = strong.on_after_batch_transfer(batch, 0)
    assert torch.equal(labels, batch[1]) and not torch.equal(images, batch[0])
    strong.trainer = SimpleNamespace(training=False)  # type: ignore[assignment]
    assert strong.on_after_batch_transfer(batch, 0) is batch
    assert next(iter(strong.train_dataloader()))[0].shape[0] == 16 and next(iter(strong.val_dataloader()))[0].shape[0] == 32
    plain, augmented = objective.evaluate(_candidate(objective)), objective.evaluate(_candidate(objective, augment_strength=1.0))
    assert plain.metrics["train_loss"] != augmented.metrics["train_loss"] and augmented.metrics["hp_augment_strength"] == 1.0


# ------------------------------------------------------------------ refused: one sentence each
def test_a_hyperparameter_it_cannot_apply() -> None:
    with pytest.raises(NASError) as error:
        _objective({**RECIPE, "dropout": {"type": "float", "lower": 0.0, "upper": 0.5}})
    assert str(error.value) == (
        "The training objective cannot apply the hyperparameter 'dropout'; it applies learning_rate, weight_decay, batch_size, epochs, "
        "label_smoothing, warmup_epochs, momentum, optimizer, augment_strength."
    )
    assert tuple(APPLIED_HYPERPARAMETERS)[:3] == ("learning_rate", "weight_decay", "batch_size")


def test_values_it_cannot_apply() -> None:
    with pytest.raises(NASError, match="'optimizer' can take 'lamb', which the training objective cannot apply: Unknown optimizer 'lamb'"):
        _objective({"optimizer": {"type": "categorical", "choices": ["sgd", "lamb"]}})
    with pytest.raises(NASError, match="'batch_size' can take 0.5, .* must be a whole number of at least 1"):
        _objective({"batch_size": {"type": "float", "lower": 0.5, "upper": 64}})


def test_searched_epochs_with_a_multi_fidelity_schedule_or_continuation(tmp_path: Path) -> None:
    with pytest.raises(NASError, match=r"^The hyperparameter 'epochs' cannot be searched with a multi-fidelity schedule, which sets each run's epochs itself; .*\.$"):
        _objective(fidelity=FidelitySchedule(hi_epochs=3, lo_epochs=1), continuation=None, checkpoint_dir=tmp_path)
    with pytest.raises(NASError, match=r"^The hyperparameter 'epochs' cannot be searched with continuation, .*; set continuation=false\.$"):
        _objective(continuation=True, checkpoint_dir=tmp_path)
    no_epochs = {k: v for k, v in RECIPE.items() if k != "epochs"}
    assert _objective(no_epochs, fidelity=FidelitySchedule(hi_epochs=3, lo_epochs=1), continuation=True, checkpoint_dir=tmp_path).planned_cost("lo") == pytest.approx(1 / 3)


class LoaderAugmented(ImageClassificationDataModule):
    """A source that would augment in its loader (as image folders do): no ``augment_batch``."""

    def load_splits(self) -> DataSplits:
        return DigitsDataModule(image_size=8, train_samples=100).splits


def test_an_augmentation_strength_needs_a_dataset_that_augments_batches() -> None:
    space = ProductSpace(NB201Space(channels=4, cells_per_stage=1, resolution=8), MixedSpace({"augment_strength": RECIPE["augment_strength"]}))
    with pytest.raises(NASError, match="'augment_strength' needs a dataset that augments whole training batches, which LoaderAugmented does not"):
        TrainingObjective(space, LoaderAugmented(image_size=8), FidelitySchedule(), measure_latency=False)
    with pytest.raises(NASError, match="LoaderAugmented augments its images in its loader, so a run cannot set its own augmentation strength"):
        RunData(LoaderAugmented(image_size=8), augment_strength=0.5)


# ------------------------------------------------------------------ export: the winner's own recipe
def _compose(name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(name, overrides=overrides)


def test_export_retrains_the_winner_with_its_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    # Searched epochs are left out: each candidate trains the tiny search's one epoch.
    run(_compose("config", [*TINY_TRAINING, "hparams=default", "~hparams.variables.epochs", "reference=null", "budget=2", f"output_dir={run_dir}"]))
    trained: list[tuple[Any, ...]] = []
    train_final = nas.export.train_final

    def recording(space: Any, encoding: Any, data: Any, settings: Any, optimizer: Any, epochs: int, *rest: Any) -> Any:
        trained.append((space.hyperparameters(encoding), data.train_batch_size, optimizer, epochs))
        return train_final(space, encoding, data, settings, optimizer, epochs, *rest)

    monkeypatch.setattr(nas.export, "train_final", recording)
    (model,) = export_run(_compose("export", [f"run_dir={run_dir}", "epochs=1", "onnx=false", "latency.warmup=0", "latency.repetitions=2"]))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert model.architecture == summary["best_architecture"]
    ((recipe, batch_size, optimizer, epochs),) = trained
    assert f"batch_size={recipe['batch_size']}" in model.architecture and batch_size == recipe["batch_size"]
    assert optimizer.lr == recipe["learning_rate"] and optimizer.weight_decay == recipe["weight_decay"]
    assert optimizer.label_smoothing == recipe["label_smoothing"] and epochs == 1  # the export's own epochs
    metrics = json.loads((model.folder / "metrics.json").read_text())
    assert metrics["recipe"] == recipe and metrics["trained_with"]["batch_size"] == recipe["batch_size"]
    assert metrics["architecture"] == model.architecture.split(" with ")[0]
    card = (model.folder / "README.md").read_text()
    assert f"Architecture: `{metrics['architecture']}`" in card and f"learning_rate={recipe['learning_rate']}" in card
    assert f"batch size {recipe['batch_size']}" in card
    # The exported network is the architecture's: it reloads without the recipe.
    with torch.no_grad():
        images = torch.randn(2, 3, 8, 8)
        torch.testing.assert_close(models.load_exported(model.folder, fused=False)(images), model.network.eval()(images))
