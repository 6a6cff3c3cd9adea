"""Lightning callbacks between a training run and the search that asked for it.

:class:`EvaluationReporter` is the search's view of a run (the "BO callback loop"):
each epoch's validation result is handed to a sink once, from global rank 0.
:class:`NonFiniteLossGuard` and :class:`TimeLimit` end runs that cannot give a usable
result, and say why, so that the search records a failure instead of a number.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class TrainingFailure(RuntimeError):
    """A run that was ended because its result would be meaningless; the message says why."""


class NonFiniteLossError(TrainingFailure):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class EpochMetrics:
    """The validation result after one epoch, averaged over all DDP processes.

    ``epoch`` counts completed epochs (1 after the first), the unit of a fidelity;
    ``elapsed_s`` is wall time since the start of ``fit``.
    """

    epoch: int
    val_acc: float
    val_loss: float
    train_loss: float
    train_acc: float
    elapsed_s: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


EpochSink = Callable[[EpochMetrics], None]


def _metric(metrics: Mapping[str, Any], name: str) -> float:
    value = metrics.get(name)
    return float(value) if value is not None else math.nan


class EvaluationReporter(Callback):
    """Collects every validation's metrics and hands each to ``sink`` on global rank 0.

    Reports at ``on_validation_end``, when Lightning has computed the validation
    metrics and the training metrics logged with them (see
    :class:`~nas.train.module.ClassificationModule`). All processes keep
    :attr:`history` (identical, since the metrics are reduced over processes); only
    rank 0 calls the sink, so under DDP the search receives each epoch once.

    Args:
        sink: called with each epoch's :class:`EpochMetrics`; ``None`` only collects.
    """

    def __init__(self, sink: EpochSink | None = None) -> None:
        self.sink = sink
        self.history: list[EpochMetrics] = []
        self._start = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.history = []
        self._start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        result = EpochMetrics(
            epoch=trainer.current_epoch + 1,
            val_acc=_metric(metrics, "val/acc"),
            val_loss=_metric(metrics, "val/loss"),
            train_loss=_metric(metrics, "train/loss"),
            train_acc=_metric(metrics, "train/acc"),
            elapsed_s=time.perf_counter() - self._start,
        )
        self.history.append(result)
        if self.sink is not None and trainer.is_global_zero:
            self.sink(result)


class NonFiniteLossGuard(Callback):
    """Raises :class:`NonFiniteLossError` as soon as the training loss is NaN or infinite.

    The decision is reduced over processes (any rank's bad loss stops all), so every
    DDP process raises together instead of one waiting forever in a gradient all-reduce.
    Checking reads the loss on the host, one device synchronisation per checked step.

    Args:
        every_n_steps: check every n-th training step.
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = max(1, every_n_steps)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx % self.every_n_steps:
            return
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else math.nan
        if trainer.strategy.reduce_boolean_decision(not math.isfinite(value), all=False):
            raise NonFiniteLossError(
                f"training loss became non-finite ({value}) at epoch {trainer.current_epoch + 1}, batch {batch_idx}"
            )


class TimeLimit(Callback):
    """Stops training once ``seconds`` of wall time have passed since the start of ``fit``.

    Stopping is graceful (``trainer.should_stop``): Lightning validates the partial
    epoch, so the epochs run so far keep their results. :attr:`reason` is set when the
    limit was hit. The decision is reduced over processes so that all stop at the same step.
    """

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"A time limit must be positive, got {seconds} s.")
        self.seconds = seconds
        self.reason: str | None = None
        self._start = time.monotonic()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reason = None
        self._start = time.monotonic()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        elapsed = time.monotonic() - self._start
        if trainer.strategy.reduce_boolean_decision(elapsed >= self.seconds, all=False):
            trainer.should_stop = True
            self.reason = (
                f"time limit of {self.seconds:g} s reached during epoch {trainer.current_epoch + 1} "
                f"after {elapsed:.1f} s"
            )


#: Asked after each validated epoch with ``(epoch, validation accuracy in %)``; returns the
#: reason to stop, or ``None`` (see :class:`nas.trial.StopRule`).
StopRule = Callable[[int, float], "str | None"]


class PruningCallback(Callback):
    """Asks ``stop_rule`` after every validated epoch but the last whether the run goes on.

    The rule is asked on global rank 0 alone and its answer is broadcast, so every DDP
    process stops after the same epoch (``trainer.should_stop``: Lightning ends ``fit``
    normally, so the epochs run keep their results and a checkpoint can be written).
    :attr:`reason` holds why the run was stopped, or ``None``.

    Args:
        stop_rule: the search's rule for this run (:class:`nas.trial.EpochGate` or any
            callable of that signature).
    """

    def __init__(self, stop_rule: StopRule) -> None:
        self.stop_rule = stop_rule
        self.reason: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reason = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        reason = None
        if trainer.is_global_zero and (trainer.max_epochs is None or epoch < trainer.max_epochs):
            reason = self.stop_rule(epoch, 100.0 * _metric(trainer.callback_metrics, "val/acc"))
        reason = trainer.strategy.broadcast(reason, src=0)
        if reason is not None:
            self.reason = reason
            trainer.should_stop = True


class HeldOutAccuracy(Callback):
    """Measures the trained network's accuracy on a held-out loader when ``fit`` ends.

    For benchmarks that report the test accuracy of what a search returns (selected on
    validation): the search itself never sees it. :attr:`accuracy` is the fraction correct
    (``None`` before the end of a fit), measured on global rank 0 over the whole loader.

    Args:
        loader: yields ``(images, labels)`` batches.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.accuracy: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.accuracy = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        correct = seen = 0
        with torch.no_grad():
            for images, labels in self.loader:
                images, labels = images.to(pl_module.device), labels.to(pl_module.device)
                correct += int((pl_module(images).argmax(dim=1) == labels).sum())
                seen += int(labels.numel())
        pl_module.train(was_training)
        self.accuracy = correct / seen if seen else None
