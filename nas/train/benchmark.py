"""What Lightning costs a candidate evaluation: ``python -m nas.train.benchmark``.

1. Training throughput (images/s) of the same network on the same batches, through
   :class:`~nas.train.ClassificationModule` + ``lightning.Trainer`` (as the search runs
   it: metrics, NaN guard, LR schedule) and through a plain PyTorch loop doing the same
   work (AdamW, the same schedule, running loss and accuracy). Both skip the first
   epoch (warm-up) and runs alternate, so that drifting machine load hits both alike.
   Each side's rate is that of its fastest timed epoch: other jobs on the machine can
   only add time, so the fastest epoch is the least disturbed measurement (the median
   is printed beside it).
2. Wall time of whole evaluations (:func:`~nas.train.train_and_evaluate`, validation
   included) at small fidelities.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from nas.train.callbacks import NonFiniteLossGuard
from nas.train.data.digits import DigitsDataModule
from nas.cli import torch_threads
from nas.train.evaluate import TrainerSettings, quiet_lightning, train_and_evaluate
from nas.train.module import ClassificationModule, OptimizerConfig, lr_multiplier
from nas.train.reference import SmallCNN


class EpochClock(Callback):
    """Wall time of each training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def lightning_epochs(data: DigitsDataModule, width: int, epochs: int, seed: int) -> list[float]:
    """Seconds per training epoch through Lightning, as the search trains (no validation)."""
    torch.manual_seed(seed)
    module = ClassificationModule(SmallCNN(data.num_classes, width), data.num_classes, OptimizerConfig())
    clock = EpochClock()
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_val_batches=0,
        callbacks=[NonFiniteLossGuard(), clock],
        **TrainerSettings().trainer_kwargs(),
    )
    trainer.fit(module, datamodule=data)
    return clock.seconds


def plain_epochs(loader: DataLoader, num_classes: int, width: int, epochs: int, seed: int) -> list[float]:
    """Seconds per training epoch of a hand-written loop doing the same work."""
    torch.manual_seed(seed)
    model = SmallCNN(num_classes, width)
    config = OptimizerConfig()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = epochs * len(loader)
    scheduler = LambdaLR(optimizer, lambda step: lr_multiplier(step, total, 0, config.schedule, config.min_lr_ratio))
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        loss_sum, correct, seen = torch.zeros(()), torch.zeros((), dtype=torch.long), 0
        for images, labels in loader:
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * labels.shape[0]
            correct += (logits.detach().argmax(dim=1) == labels).sum()
            seen += labels.shape[0]
        _ = (loss_sum / seen).item(), (correct / seen).item()
        seconds.append(time.perf_counter() - start)
    return seconds


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    data = DigitsDataModule(image_size=args.image_size, batch_size=args.batch_size, seed=args.seed)
    loader = data.train_dataloader()
    images_per_epoch = len(loader) * args.batch_size
    epoch_seconds: dict[str, list[float]] = {"plain": [], "lightning": []}
    for repeat in range(args.repeats):
        for name in ("plain", "lightning") if repeat % 2 == 0 else ("lightning", "plain"):
            if name == "plain":
                epochs = plain_epochs(loader, data.num_classes, args.width, args.epochs, args.seed)
            else:
                epochs = lightning_epochs(data, args.width, args.epochs, args.seed)
            epoch_seconds[name].extend(epochs[1:])
    result: dict[str, Any] = {"steps_per_epoch": len(loader), "timed_epochs": len(epoch_seconds["plain"])}
    for name, seconds in epoch_seconds.items():
        result[f"{name}_images_per_s"] = images_per_epoch / min(seconds)
        result[f"{name}_median_images_per_s"] = images_per_epoch / statistics.median(seconds)
    for suffix in ("", "median_"):
        ratio = result[f"plain_{suffix}images_per_s"] / result[f"lightning_{suffix}images_per_s"]
        result[f"{suffix}overhead_percent"] = 100.0 * (ratio - 1.0)
    return result


def evaluation_times(args: argparse.Namespace, fidelities: Sequence[int]) -> list[dict[str, Any]]:
    data = DigitsDataModule(image_size=args.image_size, batch_size=args.batch_size, seed=args.seed)
    rows = []
    for epochs in fidelities:
        runs = [
            train_and_evaluate(lambda: SmallCNN(data.num_classes, args.width), data, epochs=epochs, seed=args.seed)
            for _ in range(args.repeats)
        ]
        rows.append(
            {
                "epochs": epochs,
                "status": [r.status for r in runs],
                "median_wall_s": statistics.median(r.wall_time_s for r in runs),
                "median_val_acc": statistics.median(r.final_val_acc or 0.0 for r in runs),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (fixed for both loops)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="SmallCNN first-stage channels")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per throughput run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fidelities", type=int, nargs="+", default=[1, 3], help="epochs of the timed evaluations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is a warm-up")

    with torch_threads(args.threads), quiet_lightning(True):
        rates = throughput(args)
        evaluations = evaluation_times(args, args.fidelities)

    print(
        f"digits {args.image_size}x{args.image_size}, SmallCNN(width={args.width}), batch {args.batch_size}, "
        f"{args.threads} thread(s), {rates['steps_per_epoch']} steps/epoch, "
        f"{rates['timed_epochs']} timed epochs each ({args.repeats} runs)"
    )
    print("                       fastest epoch    median epoch")
    for label, key in (("plain PyTorch loop", "plain_"), ("Lightning", "lightning_")):
        print(
            f"  {label:<19}: {rates[key + 'images_per_s']:7.0f} images/s "
            f"{rates[key + 'median_images_per_s']:7.0f} images/s"
        )
    print(f"  Lightning overhead : {rates['overhead_percent']:7.1f} %        {rates['median_overhead_percent']:7.1f} %")
    for row in evaluations:
        print(
            f"  evaluation of {row['epochs']} epoch(s): {row['median_wall_s']:.2f} s wall "
            f"(val acc {row['median_val_acc']:.3f}, {', '.join(row['status'])})"
        )
    if len(evaluations) >= 2 and evaluations[-1]["epochs"] != evaluations[0]["epochs"]:
        # Wall time as a line in the epochs: its slope is the cost of one more epoch, its
        # intercept what every evaluation pays once (Trainer, set-up, first-step warm-up).
        low, high = evaluations[0], evaluations[-1]
        per_epoch = (high["median_wall_s"] - low["median_wall_s"]) / (high["epochs"] - low["epochs"])
        fixed = low["median_wall_s"] - low["epochs"] * per_epoch
        print(f"  per extra epoch: {per_epoch:.2f} s; fixed per evaluation: {fixed:.2f} s")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"config": vars(args), "throughput": rates, "evaluations": evaluations}, file, indent=2)


if __name__ == "__main__":
    main()
