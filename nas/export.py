"""``python -m nas.export run_dir=RUN``: from a search to networks you can ship.

Takes the best architecture of a run (``select=best``), its ``top_k`` best
(``select=top``) or its Pareto front (``select=front``, multi-objective runs), trains each
at a final fidelity (``epochs``; on train + validation data when the dataset has a test
split; resumable from Lightning checkpoints), evaluates it on the test split (else on
validation) and writes one folder per network under ``<run>/export/rank<k>/``:

- ``model.safetensors`` / ``model_fused.safetensors``: train-time and fused weights;
- ``architecture.json``: the architecture, its search space's configuration, classes, input;
- ``model_fused.onnx``: the fused network, checked against PyTorch with onnxruntime;
- ``metrics.json`` and ``README.md``: a model card (accuracy, parameters, FLOPs, latency of
  the fused network on this machine, the search it came from).

``models.load_exported(folder)`` rebuilds the network from the folder without executing
stored code; ``timm.create_model("nas_exported", pretrained=True,
pretrained_cfg_overlay=dict(file=".../model_fused.safetensors"))`` does the same for timm.
The search space, dataset, trainer and optimiser are the run's own, read from its store.
A run that searched training hyperparameters with the architectures (``hparams=default``)
retrains each winner with its own recipe (:func:`final_recipe`), but for the export's own
number of epochs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from models.export import (
    ARCHITECTURE_FILE,
    CARD_FILE,
    EXPORT_FORMAT,
    FUSED_WEIGHTS_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    export_and_check,
    load_exported,
    save_weights,
)
from models.profiling import count_flops, count_parameters, measure_latency
from models.reparam import reparameterize_model
from nas.cli import configure_threads, user_errors
from nas.errors import NASError
from nas.objectives.training import Recipe, training_recipe
from nas.progress import format_duration, progress_bar, progress_enabled
from nas.space import SearchSpace
from nas.spaces import ProductSpace, space_from_config
from nas.report.status import RunEvaluation, RunState, read_run
from nas.train import EpochMetrics, ImageClassificationDataModule, OptimizerConfig, TrainerSettings, train_and_evaluate
from nas.train.data import RunData, strength_shift
from nas.train.data.base import DataSplits, InMemoryImages

log = logging.getLogger(__name__)

SELECTIONS = ("best", "top", "front")
TRAIN_ON = ("auto", "train", "train+val")
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.json"


def select_evaluations(state: RunState, select: str, top_k: int) -> list[RunEvaluation]:
    """The evaluations to export, best first; :class:`NASError` when there are none."""
    if select not in SELECTIONS:
        raise NASError(f"select must be one of {', '.join(SELECTIONS)}, got {select!r}.")
    ranked = state.ranked()
    if not ranked:
        raise NASError(f"The run {state.run_dir} holds no successful full evaluation to export.")
    if select == "best":
        return ranked[:1]
    if select == "top":
        if top_k < 1:
            raise NASError(f"top_k must be at least 1, got {top_k}.")
        return ranked[:top_k]
    if state.front is None:
        raise NASError(f"The run {state.run_dir} is single-objective: it has no Pareto front to export; use select=best or select=top.")
    on_front = set(state.front)
    return [e for e in ranked if e.architecture in on_front]


def rebuild_space(state: RunState) -> SearchSpace:
    """The run's search space, from the configuration its store was created with: the
    architecture space, times its hyperparameters when the run searched them (``hparams``)."""
    config = state.search_config.get("searchspace")
    if not isinstance(config, dict):
        raise NASError(f"The search space of run {state.run_dir} cannot be rebuilt: its store records no search-space configuration.")
    hparams = state.search_config.get("hparams")
    if isinstance(hparams, dict) and isinstance(hparams.get("variables"), dict):
        # The store sorts a config's keys: the declared order of the variables is kept beside them.
        order = hparams.get("order") or list(hparams["variables"])
        hparams = {"label": hparams.get("label", "hparams"), "variables": {name: hparams["variables"][name] for name in order}}
    try:
        # The run built its space from its config (nas.run): rebuilt the same way from the stored one.
        return space_from_config(OmegaConf.create({"searchspace": config, "hparams": hparams}))
    except NASError as exc:
        raise NASError(f"The search space of run {state.run_dir} cannot be rebuilt: {exc}") from None
    except TypeError as exc:
        raise NASError(f"The search space of run {state.run_dir} cannot be rebuilt ({exc}).") from None


def member_encoding(space: SearchSpace, evaluation: RunEvaluation) -> tuple[int, ...]:
    """The encoding of a stored evaluation in the rebuilt ``space`` (a product's is read from
    its string, which names every hyperparameter)."""
    if isinstance(space, ProductSpace):
        return space.validate(space.parse(evaluation.architecture))
    return space.validate(evaluation.encoding)


def _training_node(state: RunState, key: str) -> dict[str, Any]:
    node = state.search_config.get(key)
    objective = str((state.search_config.get("objective") or {}).get("_target_", ""))
    if not objective.endswith("TrainingObjective") or not isinstance(node, dict):
        raise NASError(f"The run {state.run_dir} did not train its candidates (objective {objective or 'unknown'}): there is no trained network to export.")
    return node


def _merged(first: Dataset, second: Dataset) -> Dataset:
    """``first`` then ``second`` as one dataset (one tensor when both are held in memory)."""
    if isinstance(first, InMemoryImages) and isinstance(second, InMemoryImages):
        return InMemoryImages(torch.cat([first.images, second.images]), torch.cat([first.labels, second.labels]))
    return ConcatDataset([first, second])


class FinalTrainingData(RunData):
    """A run's dataset arranged for final training.

    Trains on the training split, or on training + validation data (``include_val``), with
    the source's augmentation of training batches; Lightning's per-epoch validation, which
    here only shows progress, uses the test split when there is one, else the validation
    split. ``batch_size`` and ``augment_strength``: a recipe's own (:class:`RunData`).
    """

    def __init__(self, source: ImageClassificationDataModule, include_val: bool, batch_size: int | None = None, augment_strength: float | None = None) -> None:
        super().__init__(source, batch_size, augment_strength)
        self.include_val = include_val

    def with_recipe(self, batch_size: int | None, augment_strength: float | None) -> "FinalTrainingData":
        """The same data (its splits merged once) with a recipe's batch size and augmentation strength."""
        data = FinalTrainingData(self.source, self.include_val, batch_size, augment_strength)
        data._splits = self.splits
        return data

    def load_splits(self) -> DataSplits:
        splits = self.source.splits
        train = _merged(splits.train, splits.val) if self.include_val else splits.train
        held_out = splits.test if splits.test is not None else splits.val
        return DataSplits(train=train, val=held_out, class_names=splits.class_names, test=splits.test)


@torch.no_grad()
def accuracy(network: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy (in %) of ``network`` (eval mode) on every batch of ``loader``.

    ``loader`` yields ``(images, labels)``: ``B x 3 x H x W`` floats and ``B`` class indices;
    the network maps images to ``B x num_classes`` logits.
    """
    network.eval()
    correct, seen = 0, 0
    for images, labels in loader:
        correct += int((network(images).argmax(dim=1) == labels).sum())
        seen += int(labels.shape[0])
    return 100.0 * correct / max(1, seen)


@dataclass
class ExportedModel:
    """What was exported for one architecture."""

    rank: int
    folder: Path
    architecture: str
    metrics: dict[str, Any]
    network: nn.Module  # the trained train-time network, in eval mode


def _model_key(architecture: str, epochs: int, seed: int, include_val: bool, data: dict[str, Any] | None = None) -> str:
    """Names the checkpoint of one final training: a resumed training must be the same one
    (``data``: the final training's own dataset settings, when it has any)."""
    parts: list[Any] = [architecture, epochs, seed, include_val] + ([data] if data else [])
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _width_coefficient(space: SearchSpace, encoding: tuple[int, ...]) -> float | None:
    """The measured width coefficient of spaces that have one (stored so reloading never re-measures)."""
    coefficient = getattr(space, "width_coefficient", None)
    return float(coefficient(encoding)) if callable(coefficient) else None


def final_recipe(space: SearchSpace, encoding: tuple[int, ...], optimizer: OptimizerConfig, source: ImageClassificationDataModule) -> Recipe | None:
    """How a winner of a run that searched hyperparameters trains finally (``None`` for a run
    that did not): its own optimiser settings and batch size, and its augmentation strength
    where it augments more than the final training's own data settings (``augment_strength``
    ``None`` otherwise: the source's augmentation). Its ``epochs`` are kept for the record
    only: the final training runs the export's own ``epochs``, which it chooses for all."""
    if not isinstance(space, ProductSpace):
        return None
    recipe = training_recipe(space.hyperparameters(encoding), optimizer)
    strength = recipe.augment_strength
    if strength is not None:
        own_shift, own_augment = int(getattr(source, "own_shift", 0)), bool(getattr(source, "augment", False))
        if not (strength_shift(strength) > own_shift or (strength > 0 and not own_augment)):
            strength = None
    return dataclasses.replace(recipe, augment_strength=strength)


def train_final(
    space: SearchSpace,
    encoding: tuple[int, ...],
    data: FinalTrainingData,
    settings: TrainerSettings,
    optimizer: OptimizerConfig,
    epochs: int,
    seed: int,
    checkpoint_dir: Path,
    resume: bool,
) -> nn.Module:
    """Train one architecture for ``epochs``; returns the trained train-time network.

    A checkpoint of the last finished epoch is kept in ``checkpoint_dir``; with ``resume``
    an interrupted training continues from it (weights, optimiser, schedule, epoch).
    """
    built: list[nn.Module] = []

    def build() -> nn.Module:
        built.append(space.to_module(encoding, num_classes=data.num_classes))
        return built[-1]

    last = checkpoint_dir / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    if ckpt_path:
        log.info("resuming the final training from %s", last)
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir, filename="last", save_top_k=1, every_n_epochs=1, enable_version_counter=False)
    bar = progress_bar(epochs, "final training", unit="epoch")
    # A log or a pipe gets no bar: it gets a line per epoch instead, as a final training takes minutes to hours.
    log_epochs = not progress_enabled()
    epochs_before: int | None = None  # a resumed training's clock starts after its checkpoint's epoch

    def on_epoch(metrics: EpochMetrics) -> None:
        nonlocal epochs_before
        bar.update(metrics.epoch - bar.n)
        bar.set_postfix(held_out_acc=f"{100 * metrics.val_acc:.2f}", refresh=False)
        if log_epochs:
            if epochs_before is None:
                epochs_before = metrics.epoch - 1
            per_epoch = metrics.elapsed_s / (metrics.epoch - epochs_before)
            log.info(
                "final training: epoch %d / %d, held-out accuracy %.2f %%, about %s left",
                metrics.epoch, epochs, 100 * metrics.val_acc, format_duration(per_epoch * (epochs - metrics.epoch)),
            )

    with bar, warnings.catch_warnings():
        # Resuming writes its checkpoints where the interrupted training wrote its own, on purpose.
        warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
        result = train_and_evaluate(
            build,
            data,
            epochs=epochs,
            trainer=dataclasses.replace(settings, enable_checkpointing=True),
            optimizer=optimizer,
            on_epoch=on_epoch,
            seed=seed,
            callbacks=[checkpoint],
            ckpt_path=ckpt_path,
        )
    # A resumed training that had already finished runs no epoch: its restored weights are the result.
    already_done = ckpt_path is not None and result.reason == "no epoch was validated"
    if not result.ok and not already_done:
        raise NASError(f"The final training of {space.to_string(encoding)} failed: {result.reason}.")
    return built[-1]


def _recipe_text(recipe: dict[str, Any]) -> str:
    return " ".join(f"{name}={format(value, '.6g') if isinstance(value, float) else value}" for name, value in recipe.items())


def _training_text(metrics: dict[str, Any]) -> str:
    """How the final training was set, for the model card."""
    used = metrics.get("trained_with")
    if not used:
        return "with the search's optimiser settings"
    augmentation = "the export's own augmentation" if used["augment_strength"] is None else f"augmentation strength {used['augment_strength']:.3g}"
    return (
        f"with the recipe searched with it (the export's own epochs): {used['optimizer']} at learning rate {used['lr']:.3g}, "
        f"weight decay {used['weight_decay']:.3g}, batch size {used['batch_size']}, label smoothing {used['label_smoothing']:.3g}, {augmentation}"
    )


def model_card(metrics: dict[str, Any]) -> str:
    """The markdown model card of one exported network."""
    search = metrics["search"]
    accuracy_line = f"| {metrics['accuracy_split']} accuracy (fused network) | {metrics['accuracy']:.2f} % |"
    return "\n".join(
        [
            f"# {search['searchspace']} network, rank {metrics['rank']} of its search",
            "",
            f"Architecture: `{metrics['architecture']}`",
            "",
            *([f"Training recipe (searched with it): `{_recipe_text(metrics['recipe'])}`", ""] if metrics.get("recipe") else []),
            "| | |",
            "|---|---|",
            accuracy_line,
            f"| parameters (train-time / fused) | {metrics['params']:,} / {metrics['fused_params']:,} |",
            f"| FLOPs (fused, one {metrics['input_shape'][1]}x{metrics['input_shape'][2]} image) | {metrics['flops']:,} |",
            f"| latency (fused, batch {metrics['latency']['batch_size']}, median of {metrics['latency']['repetitions']}) "
            f"| {metrics['latency']['median_ms']:.3f} ms on {metrics['latency']['device']} |",
            f"| ONNX vs PyTorch (max abs difference) | {'not exported' if metrics['onnx_max_abs_error'] is None else format(metrics['onnx_max_abs_error'], '.2e')} |",
            f"| classes | {metrics['num_classes']} |",
            "",
            "## Training",
            "",
            f"{metrics['epochs']} epochs on {metrics['trained_on']} of `{metrics['dataset']}` (seed {metrics['seed']}), "
            f"{_training_text(metrics)}; accuracy measured on the {metrics['accuracy_split']} split.",
            "",
            "## The search it came from",
            "",
            f"Run `{search['run_dir']}`: strategy {search['strategy']}, {search['evaluations']} evaluations; "
            f"this architecture was evaluation {search['index']} and scored {search['value']:.3f} at the search's fidelity "
            f"({search['epochs']} epochs, validation).",
            "",
            "## Use",
            "",
            "```python",
            "import models, timm",
            f"net = models.load_exported({str(metrics['folder'])!r})  # fused, eval mode",
            f"net = timm.create_model('nas_exported', pretrained=True, pretrained_cfg_overlay=dict(file={str(Path(metrics['folder']) / FUSED_WEIGHTS_FILE)!r}))",
            "```",
            "",
            f"Files: `{ARCHITECTURE_FILE}`, `{WEIGHTS_FILE}`, `{FUSED_WEIGHTS_FILE}`, `{ONNX_FILE}`, `{METRICS_FILE}`.",
            "",
        ]
    )


def export_run(cfg: DictConfig) -> list[ExportedModel]:
    """Select, train, evaluate and export the configured run's winners."""
    if cfg.train_on not in TRAIN_ON:
        raise NASError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {cfg.train_on!r}.")
    if not int(cfg.epochs) >= 1:
        raise NASError(f"The final training needs at least 1 epoch, got {cfg.epochs}.")
    state = read_run(cfg.run_dir)
    # The run's own thread count unless told otherwise: it was chosen for these networks and cores.
    configure_threads(cfg.threads if cfg.threads is not None else state.config.get("threads"))
    chosen = select_evaluations(state, cfg.select, int(cfg.top_k))
    space = rebuild_space(state)
    dataset_node = _training_node(state, "dataset")
    # The final training's own data settings (all training images, augmentation), where the
    # run's dataset has them: a search samples its training data down, a shipped network should not.
    overrides = OmegaConf.to_container(cfg.dataset, resolve=True) if cfg.get("dataset") is not None else {}
    final_data = {k: v for k, v in overrides.items() if k in dataset_node}  # type: ignore[union-attr]
    dataset_node = {**dataset_node, **final_data}
    trainer_node = OmegaConf.to_container(cfg.trainer, resolve=True) if cfg.get("trainer") else _training_node(state, "trainer")
    objective_node = _training_node(state, "objective")
    source: ImageClassificationDataModule = hydra.utils.instantiate(dataset_node)
    settings: TrainerSettings = hydra.utils.instantiate(trainer_node)
    optimizer: OptimizerConfig = hydra.utils.instantiate(objective_node.get("optimizer") or {"_target_": "nas.train.OptimizerConfig"})
    include_val = cfg.train_on == "train+val" or (cfg.train_on == "auto" and source.has_test_split)
    data = FinalTrainingData(source, include_val)
    split = "test" if source.has_test_split else "validation"
    output = Path(cfg.output_dir)
    exported = []
    for rank, evaluation in enumerate(chosen, start=1):
        encoding = member_encoding(space, evaluation)
        # A searched recipe is the winner's own (its epochs excepted: the export's epochs are kept).
        recipe = final_recipe(space, encoding, optimizer, source)
        run_data = data if recipe is None else data.with_recipe(recipe.batch_size, recipe.augment_strength)
        # The architecture string holds a searched recipe, so each recipe has a checkpoint of its own.
        key = _model_key(evaluation.architecture, int(cfg.epochs), int(cfg.seed), include_val, final_data)
        log.info("final training of rank %d (%s): %d epochs", rank, evaluation.architecture, cfg.epochs)
        network = train_final(
            space, encoding, run_data, settings, optimizer if recipe is None else recipe.optimizer, int(cfg.epochs), int(cfg.seed), output / CHECKPOINT_DIR / key, bool(cfg.resume)
        )
        exported.append(write_export(cfg, state, space, evaluation, rank, encoding, network, run_data, split, include_val, output / f"rank{rank}", recipe))
    return exported


def write_export(
    cfg: DictConfig,
    state: RunState,
    space: SearchSpace,
    evaluation: RunEvaluation,
    rank: int,
    encoding: tuple[int, ...],
    network: nn.Module,
    data: FinalTrainingData,
    split: str,
    include_val: bool,
    folder: Path,
    recipe: Recipe | None = None,
) -> ExportedModel:
    """Write one trained network's export folder and check that it reloads to the same outputs.

    A winner of a searched recipe (``recipe``, a :class:`~nas.spaces.product.ProductSpace`)
    is written as its architecture, which ``models.load_exported`` rebuilds, and its recipe beside it."""
    network = network.cpu().eval()
    fused = reparameterize_model(network)
    held_out = data.test_dataloader() if split == "test" else data.source.val_dataloader()
    sample_images = next(iter(held_out))[0][:4]
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(network, folder / WEIGHTS_FILE)
    save_weights(fused, folder / FUSED_WEIGHTS_FILE)
    # The network is the architecture's: the stored search-space configuration is the architecture space's.
    arch_space, arch_encoding = (space.architecture_space, space.architecture(encoding)) if isinstance(space, ProductSpace) else (space, encoding)
    searched = space.hyperparameters(encoding) if isinstance(space, ProductSpace) else None
    architecture = {
        "format": EXPORT_FORMAT,
        "architecture": arch_space.to_string(arch_encoding) if searched is not None else evaluation.architecture,
        "encoding": list(arch_encoding),
        **({"recipe": searched} if searched is not None else {}),
        "searchspace": state.search_config["searchspace"],
        "width_coefficient": _width_coefficient(arch_space, arch_encoding),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "input_shape": list(data.input_shape),
        "dataset": state.search_config.get("dataset"),
    }
    (folder / ARCHITECTURE_FILE).write_text(json.dumps(architecture, indent=1))
    with torch.no_grad():
        reloaded_error = float((load_exported(folder)(sample_images) - fused(sample_images)).abs().max())
    onnx_error = None
    if cfg.onnx:
        try:
            onnx_error = export_and_check(network, sample_images, folder / ONNX_FILE, tolerance=float(cfg.onnx_tolerance))
        except ImportError as exc:
            raise NASError(f"{exc} Or export without ONNX: onnx=false.") from None
        except ValueError as exc:
            raise NASError(f"The ONNX file of rank {rank} disagrees with PyTorch: {exc}") from None
    single = torch.randn(1, *data.input_shape)
    latency = measure_latency(fused, torch.randn(int(cfg.latency.batch_size), *data.input_shape), warmup=int(cfg.latency.warmup), repetitions=int(cfg.latency.repetitions), fuse=False)
    fidelity = state.search_config.get("fidelity") or {}
    used = recipe.optimizer if recipe is not None else None
    metrics: dict[str, Any] = {
        "rank": rank,
        "folder": str(folder),
        "architecture": architecture["architecture"],
        "recipe": searched,  # the hyperparameters searched with the architecture (None: not searched)
        "trained_with": None if used is None else {
            "optimizer": used.name, "lr": used.lr, "weight_decay": used.weight_decay, "momentum": used.momentum if used.name == "sgd" else None,
            "warmup_epochs": used.warmup_epochs, "label_smoothing": used.label_smoothing, "batch_size": data.train_batch_size,
            "augment_strength": data.augment_strength,  # None: the final training's own augmentation
        },
        "accuracy": accuracy(fused, held_out),
        "accuracy_unfused": accuracy(network, held_out),
        "accuracy_split": split,
        "params": count_parameters(network),
        "fused_params": count_parameters(fused, trainable_only=False),
        "flops": count_flops(fused, single),
        "latency": {
            "median_ms": latency.median_ms,
            "batch_size": latency.batch_size,
            "repetitions": latency.repetitions,
            "device": f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''})",
        },
        "onnx_max_abs_error": onnx_error,
        "reloaded_max_abs_error": reloaded_error,
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "epochs": int(cfg.epochs),
        "seed": int(cfg.seed),
        "trained_on": "training + validation data" if include_val else "the training data",
        "dataset": str((state.search_config.get("dataset") or {}).get("_target_", "?")).rsplit(".", 1)[-1],
        "search": {
            "run_dir": str(state.run_dir),
            "searchspace": space.name,
            "strategy": str((state.search_config.get("strategy") or {}).get("_target_", "?")).rsplit(".", 1)[-1],
            "evaluations": len(state.evaluations),
            "index": evaluation.index,
            "value": evaluation.value,
            "epochs": fidelity.get("hi_epochs"),
        },
    }
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=1))
    (folder / CARD_FILE).write_text(model_card(metrics))
    return ExportedModel(rank=rank, folder=folder, architecture=evaluation.architecture, metrics=metrics, network=network)


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors():
        for model in export_run(cfg):
            m = model.metrics
            print(
                f"rank {model.rank}: {m['accuracy_split']} accuracy {m['accuracy']:.2f} %, {m['fused_params']:,} parameters (fused), "
                f"{m['latency']['median_ms']:.3f} ms -> {model.folder}"
            )


if __name__ == "__main__":
    main()
