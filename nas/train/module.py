"""The LightningModule that trains any image classifier a search space builds."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from models.reparam import zero_init_branches
from nas.errors import NASError

Batch = tuple[torch.Tensor, torch.Tensor]


def _adamw(params: Iterable[nn.Parameter], config: "OptimizerConfig") -> Optimizer:
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas)


def _adam(params: Iterable[nn.Parameter], config: "OptimizerConfig") -> Optimizer:
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas)


def _sgd(params: Iterable[nn.Parameter], config: "OptimizerConfig") -> Optimizer:
    return torch.optim.SGD(
        params, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum, nesterov=config.momentum > 0
    )


OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter], "OptimizerConfig"], Optimizer]] = {
    "adamw": _adamw,
    "adam": _adam,
    "sgd": _sgd,
}
SCHEDULES: tuple[str, ...] = ("cosine", "constant")


@dataclass(frozen=True)
class OptimizerConfig:
    """How a candidate is optimised: optimiser, learning-rate schedule and loss smoothing.

    Args:
        name: one of :data:`OPTIMIZERS` (``adamw``, ``adam``, ``sgd``).
        lr: peak learning rate.
        weight_decay: decoupled for AdamW, L2 for Adam and SGD.
        betas: Adam(W) moment decay rates.
        momentum: SGD momentum (Nesterov when positive).
        schedule: ``cosine`` (decay to ``min_lr_ratio * lr`` over the run) or ``constant``.
        warmup_epochs: linear warm-up from 0, in (possibly fractional) epochs.
        min_lr_ratio: final learning rate of the cosine schedule, relative to ``lr``.
        label_smoothing: cross-entropy label smoothing.
        zero_init_branches: before training, start the branches of re-parameterisable
            blocks that have an identity branch at zero (:func:`models.reparam.zero_init_branches`),
            so that deep MobileOne stacks learn in short runs; a run restored from a checkpoint
            keeps its trained weights.
    """

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    zero_init_branches: bool = False

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise NASError(f"Unknown optimizer {self.name!r}; valid optimizers are {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise NASError(
                f"Unknown learning-rate schedule {self.schedule!r}; valid schedules are {', '.join(SCHEDULES)}."
            )
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0 or not 0 <= self.label_smoothing < 1:
            raise NASError(
                "The optimizer needs lr > 0, weight_decay >= 0, warmup_epochs >= 0 and 0 <= label_smoothing < 1, "
                f"got lr={self.lr}, weight_decay={self.weight_decay}, warmup_epochs={self.warmup_epochs}, "
                f"label_smoothing={self.label_smoothing}."
            )
        # Hydra hands lists where the dataclass expects a tuple.
        object.__setattr__(self, "betas", tuple(self.betas))


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """The learning-rate factor at optimiser ``step``: linear warm-up, then cosine or constant."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ClassificationModule(L.LightningModule):
    """Cross-entropy training of ``model`` with loss and accuracy on train and validation.

    Logged once per validation: ``val/loss``, ``val/acc`` and ``train/loss``,
    ``train/acc`` over the training steps since the previous validation (the epoch,
    with the default of one validation per epoch). The steps only update torchmetrics
    objects; nothing is logged per step, since ``self.log`` costs more than a small
    network's whole training step. Validation closes each training epoch, before the
    epoch-end hooks, so logging everything there hands the epoch's complete result to
    the search's reporter at ``on_validation_end``. Under DDP the metric objects reduce
    their sums and counts over processes, which weights each process by its samples.

    Args:
        model: maps ``batch x 3 x H x W`` images to ``batch x num_classes`` logits.
        num_classes: number of classes of the dataset.
        optimizer: optimiser, schedule and label smoothing.
        schedule_epochs: the epochs the learning-rate schedule spans (default: the
            trainer's ``max_epochs``). A run that may be continued later sets the epochs of
            the longest run, so that a short run is exactly the beginning of the long one.
    """

    def __init__(self, model: nn.Module, num_classes: int, optimizer: OptimizerConfig | None = None, schedule_epochs: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.schedule_epochs = schedule_epochs
        self.num_classes = num_classes
        self.optimizer_config = optimizer or OptimizerConfig()
        if self.optimizer_config.zero_init_branches:
            zero_init_branches(model)  # a checkpoint restored after this replaces the weights
        # validate_args=False: the argument checks synchronise with the device at every update.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        # nan_strategy="disable": no per-step NaN scan (a host sync); NonFiniteLossGuard watches the loss.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss = MeanMetric(nan_strategy="disable")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``batch x 3 x H x W`` images -> ``batch x num_classes`` logits."""
        return self.model(images)

    def _step(self, batch: Batch, accuracy: MulticlassAccuracy, mean_loss: MeanMetric) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.optimizer_config.label_smoothing)
        accuracy.update(logits.detach(), labels)
        mean_loss.update(loss.detach(), weight=labels.shape[0])
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_acc, self.train_loss)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, self.val_acc, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        metrics: dict[str, Metric] = {"val/loss": self.val_loss, "val/acc": self.val_acc}
        if not self.trainer.sanity_checking:
            metrics.update({"train/loss": self.train_loss, "train/acc": self.train_acc})
        # Lightning computes each metric object (synchronised over processes) and resets it.
        self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        config = self.optimizer_config
        optimizer = OPTIMIZERS[config.name](self.parameters(), config)
        run_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = run_steps / max(1, self.trainer.max_epochs or 1)
        total_steps = max(1, round(steps_per_epoch * self.schedule_epochs)) if self.schedule_epochs else run_steps
        warmup_steps = min(total_steps, round(config.warmup_epochs * steps_per_epoch))
        scheduler = LambdaLR(
            optimizer,
            lambda step: lr_multiplier(step, total_steps, warmup_steps, config.schedule, config.min_lr_ratio),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
