"""Objective that trains each candidate for real with Lightning and returns its validation accuracy."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from nas.errors import NASError
from nas.fidelity import FidelitySchedule, epoch_metric_key
from nas.objectives.base import Evaluation
from nas.space import Encoding, SearchSpace
from nas.train import ImageClassificationDataModule, OptimizerConfig, TrainerSettings, train_and_evaluate
from nas.train.callbacks import EpochMetrics, HeldOutAccuracy, StopRule
from nas.trial import PRUNED


#: The metric of ``held_out_metric``: accuracy (%) on the dataset's test split.
HELD_OUT_METRIC = "test_acc"


class TrainingObjective:
    """Trains ``space.to_module(encoding)`` on a dataset for the fidelity's number of epochs.

    The value is the validation accuracy (in %) after the last epoch. Every epoch's
    validation accuracy is kept in the metrics (``value_at_epoch_<k>``), which is how a
    full evaluation also yields its low-fidelity observation for free. Parameters and
    latency of the fused network are recorded for accuracy-vs-latency reports.

    Args:
        space: builds the candidate networks.
        dataset: the data (``configs/dataset``).
        fidelity: epochs per fidelity and the cost of each (``configs/fidelity``).
        trainer: Lightning settings (``configs/trainer``).
        optimizer: optimiser and schedule of every candidate.
        time_limit_s: wall-clock limit of one training run; exceeding it fails the candidate.
        seed: seeds weights and data order, so an evaluation is repeatable.
        measure_latency: profile the trained network (fused, batch 1) after training.
        on_epoch: receives each epoch's metrics as training goes (the search's live view), in
            the process that trains: an executor that trains elsewhere returns the epochs in
            the evaluation's metrics (``value_at_epoch_<k>``) instead.
        continuation: keep a Lightning checkpoint of every run in ``checkpoint_dir``, and
            continue a candidate evaluated again at more epochs from it, paying only the
            extra epochs (a run at fewer epochs than one already made costs nothing: its
            epochs were validated). Every run's learning-rate schedule then spans
            ``hi_epochs``, so that a short run is the beginning of the full one. Default:
            in multi-fidelity searches only (checkpoints take disk space).
        checkpoint_dir: where the checkpoints of ``continuation`` are kept (the run
            directory's ``checkpoints``, so a resumed search continues them too).
        held_out_metric: also measure each trained network on the dataset's test split
            (``metrics[HELD_OUT_METRIC]``, in %), for benchmarks that report the test accuracy
            of what a search returns; they take it out of the metrics before the strategy is
            told (:mod:`nas.bench.training`). Off in searches: the test split stays unseen.
    """

    def __init__(
        self,
        space: SearchSpace,
        dataset: ImageClassificationDataModule,
        fidelity: FidelitySchedule,
        trainer: TrainerSettings | None = None,
        optimizer: OptimizerConfig | None = None,
        time_limit_s: float | None = None,
        seed: int = 0,
        measure_latency: bool = True,
        on_epoch: Callable[[EpochMetrics], None] | None = None,
        continuation: bool | None = None,
        checkpoint_dir: str | Path | None = None,
        held_out_metric: bool = False,
    ) -> None:
        if continuation is None:
            continuation = fidelity.multi_fidelity
        if continuation and checkpoint_dir is None:
            raise NASError("Continuing candidates' runs needs a checkpoint_dir to keep their checkpoints in.")
        self.continuation = continuation
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.space = space
        self.dataset = dataset
        self.fidelity = fidelity
        self.trainer = trainer or TrainerSettings()
        self.optimizer = optimizer or OptimizerConfig()
        self.time_limit_s = time_limit_s
        self.seed = seed
        self.measure_latency = measure_latency
        self.on_epoch = on_epoch
        self.held_out_metric = held_out_metric
        # Load the data now: a missing or empty dataset must stop the search before it starts.
        self.dataset.setup("fit")

    @classmethod
    def from_config(cls, cfg: Any, space: SearchSpace, seed: int, **overrides: Any) -> "TrainingObjective":
        """The objective of ``cfg.objective`` with the dataset, trainer and fidelity of ``cfg``
        (their config groups), training with ``seed``; ``overrides`` replace constructor arguments."""
        import hydra

        # Built objects are passed to a partial: given to instantiate directly, Hydra would
        # turn the dataclasses back into configs.
        build = hydra.utils.instantiate(cfg.objective, _partial_=True)
        return build(
            space=space,
            dataset=hydra.utils.instantiate(cfg.dataset),
            trainer=hydra.utils.instantiate(cfg.trainer),
            fidelity=hydra.utils.instantiate(cfg.fidelity),
            seed=seed,
            **overrides,
        )

    @property
    def needs_own_process(self) -> bool:
        """Whether each evaluation must run in a process of its own (see :mod:`nas.executors`).

        Lightning's ``ddp`` launcher starts the calling script again for every extra
        process; were that script the search, each copy would run a whole search.
        """
        return self.trainer.launches_script_copies

    def __getstate__(self) -> dict[str, object]:
        # Sent to worker processes without ``on_epoch``: a callback into the search's
        # process cannot run in another one, and the epochs come back in the metrics.
        return {**self.__dict__, "on_epoch": None}

    def _run_files(self, encoding: Encoding) -> tuple[Path, Path]:
        """The checkpoint of ``encoding``'s run and the record of its validated epochs."""
        assert self.checkpoint_dir is not None
        stem = "arch-" + "-".join(map(str, encoding))
        return self.checkpoint_dir / f"{stem}.ckpt", self.checkpoint_dir / f"{stem}.json"

    #: It validates after every epoch, so a pruning rule can stop its runs (nas.search checks).
    reports_epochs = True

    def evaluate(self, encoding: Encoding, fidelity: str = "hi", stop_rule: StopRule | None = None) -> Evaluation:
        """Train ``encoding`` for ``fidelity``'s epochs; ``stop_rule`` may stop the run between
        epochs (a *pruned* evaluation, charged the epochs it ran)."""
        epochs = self.fidelity.epochs(fidelity)
        if self.continuation:
            return self._continue(encoding, epochs, stop_rule)
        return self._train(encoding, epochs, self.fidelity.cost(fidelity), stop_rule=stop_rule)

    def _continue(self, encoding: Encoding, epochs: int, stop_rule: StopRule | None = None) -> Evaluation:
        """Evaluate at ``epochs`` from the furthest earlier run of ``encoding``, if any."""
        checkpoint, record = self._run_files(encoding)
        done = json.loads(record.read_text()) if record.is_file() and checkpoint.is_file() else {"epochs": 0, "values": {}}
        if done["epochs"] >= epochs:
            values = {int(k): v for k, v in done["values"].items() if int(k) <= epochs}
            return Evaluation(value=values[epochs], cost=0.0, metrics={epoch_metric_key(k): v for k, v in sorted(values.items())})
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        evaluation = self._train(
            encoding, epochs, (epochs - done["epochs"]) / self.fidelity.hi_epochs,
            ckpt_path=str(checkpoint) if done["epochs"] else None, save_checkpoint=str(checkpoint), stop_rule=stop_rule, start_epoch=done["epochs"],
        )
        # Earlier epochs were validated by the earlier run: the evaluation reports them all.
        evaluation.metrics = {**{epoch_metric_key(int(k)): v for k, v in done["values"].items()}, **evaluation.metrics}
        if evaluation.status in ("ok", PRUNED):
            # A pruned run's checkpoint is kept too: evaluated again, it continues from there.
            reached = epochs if evaluation.status == "ok" else int(evaluation.metrics["epochs_run"])
            values = {**done["values"], **{str(k): evaluation.metrics[epoch_metric_key(k)] for k in range(done["epochs"] + 1, reached + 1)}}
            record.write_text(json.dumps({"epochs": reached, "values": values}))
        return evaluation

    def _train(
        self, encoding: Encoding, epochs: int, cost: float, ckpt_path: str | None = None, save_checkpoint: str | None = None,
        stop_rule: StopRule | None = None, start_epoch: int = 0,
    ) -> Evaluation:
        """Train ``encoding`` up to ``epochs`` (from ``start_epoch``, the checkpoint's, when continuing);
        ``cost`` is that of the epochs this call is to train."""
        num_classes = self.dataset.num_classes
        held_out = HeldOutAccuracy(self.dataset.test_dataloader()) if self.held_out_metric else None
        result = train_and_evaluate(
            lambda: self.space.to_module(encoding, num_classes=num_classes),
            self.dataset,
            epochs=epochs,
            trainer=self.trainer,
            optimizer=self.optimizer,
            on_epoch=self.on_epoch,
            time_limit_s=self.time_limit_s,
            seed=self.seed,
            ckpt_path=ckpt_path,
            schedule_epochs=self.fidelity.hi_epochs if self.continuation else None,
            save_checkpoint=save_checkpoint,
            stop_rule=stop_rule,
            callbacks=[held_out] if held_out is not None else (),
        )
        metrics: dict[str, float] = {epoch_metric_key(m.epoch): 100.0 * m.val_acc for m in result.history}
        if held_out is not None and held_out.accuracy is not None:
            metrics[HELD_OUT_METRIC] = 100.0 * held_out.accuracy
        metrics["epochs_run"] = float(result.epochs_run)
        metrics["train_seconds"] = result.wall_time_s
        metrics["training_processes"] = float(result.world_size)
        if result.history:
            metrics["val_loss"] = result.history[-1].val_loss
            metrics["train_loss"] = result.history[-1].train_loss
        if result.status == PRUNED and result.final_val_acc is not None:
            # Charged the epochs it ran of those this call was to train.
            ran = (result.epochs_run - start_epoch) / (epochs - start_epoch)
            return Evaluation(value=100.0 * result.final_val_acc, cost=cost * ran, status=PRUNED, metrics=metrics, error=result.reason)
        if not result.ok or result.final_val_acc is None:
            return Evaluation(value=math.nan, cost=cost, status="failed", metrics=metrics, error=result.reason or "no epoch was validated")
        if self.measure_latency:
            metrics.update(self._profile(encoding, num_classes))
        return Evaluation(value=100.0 * result.final_val_acc, cost=cost, metrics=metrics)

    def planned_cost(self, fidelity: str) -> float:
        """What an evaluation at ``fidelity`` costs (also charged when it fails)."""
        return self.fidelity.cost(fidelity)

    def _profile(self, encoding: Encoding, num_classes: int) -> dict[str, float]:
        import torch

        from models.profiling import count_parameters, measure_latency

        model = self.space.to_module(encoding, num_classes=num_classes)
        sample = torch.randn(1, *self.dataset.input_shape)
        stats = measure_latency(model, sample, warmup=2, repetitions=10)
        return {"params": float(count_parameters(model)), "latency_ms": stats.median_ms}
