"""ClassificationModule: optimisers and the warm-up + cosine schedule as applied in training."""
from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from nas.train import DigitsDataModule, OptimizerConfig, TrainerSettings, train_and_evaluate
from nas.train.module import lr_multiplier
from nas.train.reference import SmallCNN


class LearningRates(Callback):
    """Records the learning rate in force at every training step."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.optimizer: torch.optim.Optimizer | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.optimizer = trainer.optimizers[0]
        self.rates.append(self.optimizer.param_groups[0]["lr"])


def test_lr_multiplier_warms_up_linearly_then_follows_a_cosine() -> None:
    assert lr_multiplier(0, 100, 10, "cosine", 0.0) == pytest.approx(0.1)
    assert lr_multiplier(9, 100, 10, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_multiplier(10, 100, 10, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_multiplier(55, 100, 10, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_multiplier(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(80, 100, 10, "constant", 0.1) == 1.0


def test_training_applies_warm_up_and_cosine_per_step(digits: DigitsDataModule, cpu: TrainerSettings) -> None:
    recorder = LearningRates()
    config = OptimizerConfig(lr=0.01, warmup_epochs=1, min_lr_ratio=0.1)

    result = train_and_evaluate(
        lambda: SmallCNN(10, width=4), digits, epochs=2, trainer=cpu, optimizer=config, callbacks=[recorder]
    )

    assert result.ok, result.reason
    steps = len(digits.train_dataloader())
    rates = recorder.rates
    assert len(rates) == 2 * steps
    assert rates[0] == pytest.approx(0.01 / steps)
    assert rates[steps - 1] == pytest.approx(0.01)
    assert rates[steps:] == sorted(rates[steps:], reverse=True)
    # The last step is one step short of the floor, min_lr_ratio * lr.
    assert 0.01 * 0.1 < rates[-1] < 0.01 * 0.105
    assert isinstance(recorder.optimizer, torch.optim.AdamW)
    assert recorder.optimizer.param_groups[0]["weight_decay"] == 0.05


@pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_optimizer_is_chosen_by_name(name: str, kind: type, digits: DigitsDataModule, cpu: TrainerSettings) -> None:
    recorder = LearningRates()
    config = OptimizerConfig(name=name, lr=0.05, schedule="constant", label_smoothing=0.1)

    result = train_and_evaluate(
        lambda: SmallCNN(10, width=4), digits, epochs=1, trainer=cpu, optimizer=config, callbacks=[recorder]
    )

    assert result.ok, result.reason
    assert isinstance(recorder.optimizer, kind)
    assert set(recorder.rates) == {0.05}
