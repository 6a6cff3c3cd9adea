"""Objective that trains each candidate for real with Lightning and returns its validation accuracy."""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nas.errors import NASError
from nas.fidelity import FidelitySchedule, epoch_metric_key
from nas.objectives.base import Evaluation
from nas.space import Encoding, SearchSpace
from nas.spaces.hparams import MixedSpace
from nas.spaces.product import ProductSpace
from nas.train import ImageClassificationDataModule, OptimizerConfig, TrainerSettings, train_and_evaluate
from nas.train.callbacks import EpochMetrics, HeldOutAccuracy, StopRule
from nas.train.data import RunData
from nas.trial import PRUNED


#: The metric of ``held_out_metric``: accuracy (%) on the dataset's test split.
HELD_OUT_METRIC = "test_acc"
#: Prefix of the metrics that record the recipe a candidate of a product space trained with.
HYPERPARAMETER_METRIC = "hp_"

#: The training hyperparameters a candidate of a :class:`~nas.spaces.product.ProductSpace`
#: may set; each overrides the objective's own setting for that candidate's run.
APPLIED_HYPERPARAMETERS: dict[str, str] = {
    "learning_rate": "the optimiser's peak learning rate (OptimizerConfig.lr)",
    "weight_decay": "the optimiser's weight decay (OptimizerConfig.weight_decay)",
    "batch_size": "the run's training batch size (validation batches keep the dataset's)",
    "epochs": "the run's epochs instead of fidelity.hi_epochs, charged epochs / hi_epochs (mono-fidelity, no continuation)",
    "label_smoothing": "the cross-entropy's label smoothing (OptimizerConfig.label_smoothing)",
    "warmup_epochs": "the learning rate's linear warm-up, in epochs (OptimizerConfig.warmup_epochs)",
    "momentum": "SGD's momentum (OptimizerConfig.momentum)",
    "optimizer": "the optimiser's name, adamw, adam or sgd (OptimizerConfig.name)",
    "augment_strength": "in [0, 1]: training batches shifted by up to round(4 x strength) px, and mirrored above 0 where the dataset's flip allows (in-memory datasets)",
}
#: The hyperparameters that are fields of :class:`~nas.train.OptimizerConfig`, with the field's name.
OPTIMIZER_FIELDS: dict[str, str] = {
    "learning_rate": "lr", "weight_decay": "weight_decay", "label_smoothing": "label_smoothing",
    "warmup_epochs": "warmup_epochs", "momentum": "momentum", "optimizer": "name",
}


@dataclass(frozen=True)
class Recipe:
    """How one candidate trains: its optimiser settings, and, where its hyperparameters set them,
    its training batch size, epochs and augmentation strength (``None``: the objective's own)."""

    optimizer: OptimizerConfig
    batch_size: int | None = None
    epochs: int | None = None
    augment_strength: float | None = None


def _whole(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise NASError(f"The hyperparameter {name!r} must be a whole number of at least 1, got {value!r}.")
    return int(value)


def check_applied(names: Iterable[str]) -> None:
    """Refuse a hyperparameter that is not one of :data:`APPLIED_HYPERPARAMETERS`."""
    unknown = [name for name in names if name not in APPLIED_HYPERPARAMETERS]
    if unknown:
        raise NASError(f"The training objective cannot apply the hyperparameter {unknown[0]!r}; it applies {', '.join(APPLIED_HYPERPARAMETERS)}.")


def training_recipe(hyperparameters: Mapping[str, object], optimizer: OptimizerConfig) -> Recipe:
    """The recipe of a candidate whose hyperparameters are ``hyperparameters`` (names of
    :data:`APPLIED_HYPERPARAMETERS`), ``optimizer`` giving every setting they leave alone."""
    check_applied(hyperparameters)
    fields = {OPTIMIZER_FIELDS[name]: value for name, value in hyperparameters.items() if name in OPTIMIZER_FIELDS}
    strength = hyperparameters.get("augment_strength")
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0):
        raise NASError(f"The hyperparameter 'augment_strength' lies in [0, 1], got {strength!r}.")
    return Recipe(
        optimizer=dataclasses.replace(optimizer, **fields) if fields else optimizer,
        batch_size=_whole("batch_size", hyperparameters["batch_size"]) if "batch_size" in hyperparameters else None,
        epochs=_whole("epochs", hyperparameters["epochs"]) if "epochs" in hyperparameters else None,
        augment_strength=float(strength) if strength is not None else None,
    )


def recipe_metrics(hyperparameters: Mapping[str, object]) -> dict[str, float]:
    """``hp_<name>``: the numeric hyperparameters a candidate trained with (an optimiser's name
    is in the candidate's string)."""
    return {
        HYPERPARAMETER_METRIC + name: float(value)  # type: ignore[arg-type]
        for name, value in hyperparameters.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class TrainingObjective:
    """Trains ``space.to_module(encoding)`` on a dataset for the fidelity's number of epochs.

    The value is the validation accuracy (in %) after the last epoch. Every epoch's
    validation accuracy is kept in the metrics (``value_at_epoch_<k>``), which is how a
    full evaluation also yields its low-fidelity observation for free. Parameters and
    latency of the fused network are recorded for accuracy-vs-latency reports.

    **Searched recipes.** When ``space`` is a :class:`~nas.spaces.product.ProductSpace`, each
    candidate trains with its own hyperparameters (:data:`APPLIED_HYPERPARAMETERS`) in place
    of the objective's settings; they come from the encoding, so they reach any worker that
    evaluates it. Its numeric ones are recorded as ``metrics["hp_<name>"]`` and the run's
    optimiser steps as ``metrics["steps"]``. A candidate that sets its ``epochs`` trains that
    many and is charged ``epochs / fidelity.hi_epochs``; it is evaluated at full fidelity only.
    A hyperparameter the objective cannot apply is refused at construction.

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
        self.hparams: MixedSpace | None = space.hparams if isinstance(space, ProductSpace) else None
        if self.hparams is not None:
            self._check_hyperparameters(self.hparams)
        # Load the data now: a missing or empty dataset must stop the search before it starts.
        self.dataset.setup("fit")

    def _check_hyperparameters(self, hparams: MixedSpace) -> None:
        """Refuse, before any training, a searched hyperparameter this objective cannot apply."""
        names = hparams.variable_names
        check_applied(names)
        if "epochs" in names and self.fidelity.multi_fidelity:
            raise NASError(
                "The hyperparameter 'epochs' cannot be searched with a multi-fidelity schedule, which sets each run's epochs itself; "
                "use a mono-fidelity schedule (fidelity.lo_epochs=null) or drop 'epochs' from the hyperparameters."
            )
        if "epochs" in names and self.continuation:
            raise NASError(
                "The hyperparameter 'epochs' cannot be searched with continuation, whose runs follow one learning-rate schedule of "
                "fidelity.hi_epochs epochs while each candidate's would span its own epochs; set continuation=false."
            )
        if "augment_strength" in names and not callable(getattr(self.dataset, "augment_batch", None)):
            raise NASError(
                f"The hyperparameter 'augment_strength' needs a dataset that augments whole training batches, which "
                f"{type(self.dataset).__name__} does not (it augments in its loader); use an in-memory dataset (digits, fashion_mnist)."
            )
        for variable in hparams.variables:
            extremes = variable.grid if not variable.numeric else (variable.grid[0], variable.grid[-1])
            for value in extremes:
                try:
                    training_recipe({variable.name: value}, self.optimizer)
                except NASError as error:
                    raise NASError(f"The hyperparameter {variable.name!r} can take {value!r}, which the training objective cannot apply: {error}") from None

    def recipe(self, encoding: Encoding) -> Recipe | None:
        """How ``encoding`` trains, for a product space's candidates (``None``: the objective's settings)."""
        if self.hparams is None:
            return None
        return training_recipe(self.space.hyperparameters(encoding), self.optimizer)  # type: ignore[attr-defined]

    def _full_only(self, fidelity: str) -> str:
        return (
            f"A candidate whose hyperparameters set its epochs is evaluated at full fidelity only, not at {fidelity!r}; "
            "use a mono-fidelity strategy, or drop 'epochs' from the hyperparameters."
        )

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
        recipe = self.recipe(encoding)
        if recipe is not None and recipe.epochs is not None:
            if epochs != self.fidelity.hi_epochs:
                raise NASError(self._full_only(fidelity))
            # Its own epochs, charged as a share of a full evaluation (continuation is refused).
            return self._train(encoding, recipe.epochs, recipe.epochs / self.fidelity.hi_epochs, stop_rule=stop_rule)
        if self.continuation:
            return self._continue(encoding, epochs, stop_rule)
        return self._train(encoding, epochs, self.fidelity.cost(fidelity), stop_rule=stop_rule)

    def _continue(self, encoding: Encoding, epochs: int, stop_rule: StopRule | None = None) -> Evaluation:
        """Evaluate at ``epochs`` from the furthest earlier run of ``encoding``, if any."""
        checkpoint, record = self._run_files(encoding)
        done = json.loads(record.read_text()) if record.is_file() and checkpoint.is_file() else {"epochs": 0, "values": {}}
        if done["epochs"] >= epochs:
            values = {int(k): v for k, v in done["values"].items() if int(k) <= epochs}
            metrics = {epoch_metric_key(k): v for k, v in sorted(values.items())}
            if self.hparams is not None:
                metrics.update(recipe_metrics(self.space.hyperparameters(encoding)))  # type: ignore[attr-defined]
            return Evaluation(value=values[epochs], cost=0.0, metrics=metrics)
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
        recipe = self.recipe(encoding)
        result = train_and_evaluate(
            lambda: self.space.to_module(encoding, num_classes=num_classes),
            self.dataset if recipe is None else RunData(self.dataset, recipe.batch_size, recipe.augment_strength),
            epochs=epochs,
            trainer=self.trainer,
            optimizer=self.optimizer if recipe is None else recipe.optimizer,
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
        metrics["steps"] = float(result.steps)
        if recipe is not None:
            metrics.update(recipe_metrics(self.space.hyperparameters(encoding)))  # type: ignore[attr-defined]
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
        """What an evaluation at ``fidelity`` costs (also charged when it fails). Searched
        ``epochs`` allow full evaluations only (a multi-fidelity strategy is refused before it
        starts), each charged its own epochs when it returns."""
        if self.hparams is not None and "epochs" in self.hparams.variable_names and self.fidelity.epochs(fidelity) != self.fidelity.hi_epochs:
            raise NASError(self._full_only(fidelity))
        return self.fidelity.cost(fidelity)

    def _profile(self, encoding: Encoding, num_classes: int) -> dict[str, float]:
        import torch

        from models.profiling import count_parameters, measure_latency

        model = self.space.to_module(encoding, num_classes=num_classes)
        sample = torch.randn(1, *self.dataset.input_shape)
        stats = measure_latency(model, sample, warmup=2, repetitions=10)
        return {"params": float(count_parameters(model)), "latency_ms": stats.median_ms}
