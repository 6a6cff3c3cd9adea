"""train_and_evaluate: real training on digits, per-epoch reports, failures as results."""
from __future__ import annotations

import math

import pytest
import torch

from nas.errors import NASError
from nas.train import (
    DigitsDataModule,
    EpochMetrics,
    OptimizerConfig,
    TrainerSettings,
    train_and_evaluate,
)
from nas.train.reference import SmallCNN

FAST = OptimizerConfig(lr=1e-2)


def test_small_cnn_learns_digits_and_reports_each_epoch_once(
    digits: DigitsDataModule, cpu: TrainerSettings
) -> None:
    reports: list[EpochMetrics] = []
    rng_before = torch.get_rng_state()

    result = train_and_evaluate(
        lambda: SmallCNN(10, width=8), digits, epochs=3, trainer=cpu, optimizer=FAST, on_epoch=reports.append
    )

    assert result.ok, result.reason
    assert [m.epoch for m in reports] == [1, 2, 3]
    assert tuple(reports) == result.history
    assert result.epochs_run == 3
    # Chance is 0.1; this network reaches > 0.9 on every seed tried.
    assert result.final_val_acc is not None and result.final_val_acc > 0.8
    assert result.best_val_acc == max(m.val_acc for m in reports)
    assert reports[-1].train_loss < reports[0].train_loss
    assert all(math.isfinite(m.val_loss) and 0.0 <= m.train_acc <= 1.0 for m in reports)
    assert [m.elapsed_s for m in reports] == sorted(m.elapsed_s for m in reports)
    # The caller's random state is left as it was.
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_same_seed_gives_the_same_run_and_another_seed_another(digits: DigitsDataModule, cpu: TrainerSettings) -> None:
    def run(seed: int) -> list[float]:
        result = train_and_evaluate(lambda: SmallCNN(10, width=4), digits, epochs=1, trainer=cpu, seed=seed)
        return [result.history[0].train_loss, result.history[0].val_loss]

    first = run(0)
    assert run(0) == first
    assert run(1) != first


def test_reports_only_validated_epochs(digits: DigitsDataModule) -> None:
    reports: list[EpochMetrics] = []
    settings = TrainerSettings(num_threads=1, check_val_every_n_epoch=2)

    result = train_and_evaluate(
        lambda: SmallCNN(10, width=4), digits, epochs=4, trainer=settings, on_epoch=reports.append
    )

    assert result.ok, result.reason
    assert [m.epoch for m in reports] == [2, 4]


def test_nan_loss_fails_the_run_with_its_reason(digits: DigitsDataModule, cpu: TrainerSettings, breaking_model) -> None:
    reports: list[EpochMetrics] = []

    result = train_and_evaluate(breaking_model("nan", after=3), digits, epochs=2, trainer=cpu, on_epoch=reports.append)

    assert result.status == "failed"
    assert "non-finite" in result.reason and "epoch 1" in result.reason
    assert reports == [] and result.final_val_acc is None


def test_exception_in_the_model_fails_the_run_with_its_reason(
    digits: DigitsDataModule, cpu: TrainerSettings, breaking_model
) -> None:
    result = train_and_evaluate(breaking_model("raise", after=60), digits, epochs=3, trainer=cpu)

    assert result.status == "failed"
    assert result.reason == "RuntimeError: candidate forward failed"
    # 44 steps per epoch: the first epoch completed and kept its result.
    assert result.epochs_run == 1 and result.final_val_acc is not None


def test_out_of_memory_is_named_as_such(digits: DigitsDataModule, cpu: TrainerSettings, breaking_model) -> None:
    result = train_and_evaluate(breaking_model("oom", after=1), digits, epochs=1, trainer=cpu)

    assert result.status == "failed"
    assert result.reason.startswith("out of memory (OutOfMemoryError: CUDA out of memory.")


def test_a_failing_model_factory_is_a_failed_run(digits: DigitsDataModule, cpu: TrainerSettings) -> None:
    def factory() -> torch.nn.Module:
        raise ValueError("width must be positive")

    result = train_and_evaluate(factory, digits, epochs=1, trainer=cpu)

    assert result.status == "failed" and result.reason == "ValueError: width must be positive"
    assert result.history == ()


def test_time_limit_stops_training_and_fails_the_run(digits: DigitsDataModule, cpu: TrainerSettings) -> None:
    reports: list[EpochMetrics] = []

    result = train_and_evaluate(
        lambda: SmallCNN(10, width=4), digits, epochs=10_000, trainer=cpu, time_limit_s=0.5, on_epoch=reports.append
    )

    assert result.status == "failed"
    assert result.reason.startswith("time limit of 0.5 s reached")
    # Stopping is graceful: the interrupted epoch is validated and reported.
    assert 1 <= result.epochs_run < 10_000
    assert [m.epoch for m in reports] == list(range(1, result.epochs_run + 1))


def test_configuration_errors_raise(digits: DigitsDataModule) -> None:
    with pytest.raises(NASError, match="at least 1 training epoch"):
        train_and_evaluate(SmallCNN(), digits, epochs=0)
    with pytest.raises(NASError, match="valid presets are cpu, gpu, ddp"):
        train_and_evaluate(SmallCNN(), digits, epochs=1, trainer="tpu")
    with pytest.raises(NASError, match="valid optimizers are adamw, adam, sgd"):
        OptimizerConfig(name="lion")
    with pytest.raises(NASError, match="trainer settings cannot be used here"):
        train_and_evaluate(SmallCNN(), digits, epochs=1, trainer=TrainerSettings(accelerator="cpu", precision="13-bit"))
