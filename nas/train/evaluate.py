"""One candidate evaluation: train a network, report every epoch, never raise for the candidate's faults.

A candidate can fail (exception while building or training, NaN loss, out of memory,
time limit); :func:`train_and_evaluate` turns each into a failed :class:`TrainingResult`
with its reason so that the search records it and goes on. Bad *configuration* (an
unloadable dataset, trainer settings this machine cannot run, ``epochs < 1``) is not
the candidate's fault and raises :class:`~nas.errors.NASError`.
"""
from __future__ import annotations

import atexit
import functools
import logging
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Literal, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn

from nas.cli import torch_threads
from nas.errors import NASError
from nas.train.callbacks import (
    EpochMetrics,
    EpochSink,
    EvaluationReporter,
    NonFiniteLossGuard,
    PruningCallback,
    StopRule,
    TimeLimit,
    TrainingFailure,
)
from nas.train.data.base import ImageClassificationDataModule
from nas.train.module import ClassificationModule, OptimizerConfig

ModelFactory = Callable[[], nn.Module]
Status = Literal["ok", "failed", "pruned"]

_QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


@dataclass(frozen=True)
class TrainerSettings:
    """Where and how Lightning runs a candidate: the keyword arguments of ``lightning.Trainer``.

    Defaults are for a search's many short runs: no checkpoints, progress bar, logger,
    model summary or sanity validation, which would cost time at every evaluation and
    write files nobody reads (the search stores results itself).

    ``strategy="ddp"`` uses Lightning's script launcher: the *calling script* is started
    again once per extra device, and every process runs it to the end, so code after
    :func:`train_and_evaluate` must act on global rank 0 only (``result.global_rank``).

    Args:
        num_threads: torch's intra-op CPU threads during the run (restored after); ``None``
            keeps the current setting. One thread per run is fastest when several runs or
            other jobs share the cores, as OpenMP threads spin while waiting for each other.
        quiet: silence Lightning's per-run banners and hints.
        extra: further ``Trainer`` arguments (e.g. ``gradient_clip_val``), applied last.
    """

    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = 1
    deterministic: bool = False
    check_val_every_n_epoch: int = 1
    enable_checkpointing: bool = False
    enable_progress_bar: bool = False
    enable_model_summary: bool = False
    logger: bool = False
    num_sanity_val_steps: int = 0
    num_threads: int | None = None
    quiet: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def launches_script_copies(self) -> bool:
        """Whether Lightning will start the calling script again for the other processes.

        True for the ``ddp`` family of strategies over more than one process, unless the
        processes are spawned or forked (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``),
        which run a function instead of the script. A caller whose script must not run
        twice (a search) trains such settings in a process of its own (:mod:`nas.worker`).
        """
        strategy = str(self.strategy).lower()
        single = self.devices in (1, "1") and self.num_nodes == 1
        in_process = any(kind in strategy for kind in ("spawn", "fork", "notebook"))
        return strategy.startswith("ddp") and not single and not in_process

    def trainer_kwargs(self) -> dict[str, Any]:
        """The arguments of ``lightning.Trainer`` (all fields but those applied around it)."""
        kwargs = asdict(self)
        for key in ("num_threads", "quiet"):
            kwargs.pop(key)
        kwargs.update(kwargs.pop("extra"))
        return kwargs


#: Named presets, mirrored by ``configs/trainer/<name>.yaml``.
TRAINER_PRESETS: dict[str, TrainerSettings] = {
    "cpu": TrainerSettings(),
    "gpu": TrainerSettings(accelerator="gpu", devices=1, precision="16-mixed"),
    # accelerator "auto": on GPUs when there are any, else 2 CPU processes over gloo.
    "ddp": TrainerSettings(accelerator="auto", devices=2, strategy="ddp"),
}


def trainer_settings(trainer: TrainerSettings | str) -> TrainerSettings:
    """A preset by name, or the settings themselves."""
    if isinstance(trainer, TrainerSettings):
        return trainer
    if trainer not in TRAINER_PRESETS:
        raise NASError(f"Unknown trainer preset {trainer!r}; valid presets are {', '.join(TRAINER_PRESETS)}.")
    return TRAINER_PRESETS[trainer]


@dataclass(frozen=True)
class TrainingResult:
    """The outcome of one evaluation.

    ``final_val_acc`` and ``best_val_acc`` come from :attr:`history` and are ``None``
    when no epoch was validated. A failed run keeps the epochs it completed; a pruned one
    (stopped between epochs by the search's stop rule, ``reason`` saying why) the epochs it ran.
    """

    status: Status
    reason: str | None
    history: tuple[EpochMetrics, ...]
    wall_time_s: float
    global_rank: int = 0
    world_size: int = 1  # processes that trained together (DDP ranks)
    steps: int = 0  # optimiser steps taken by the end of the run (a resumed run counts those before it)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def epochs_run(self) -> int:
        return self.history[-1].epoch if self.history else 0

    @property
    def final_val_acc(self) -> float | None:
        return self.history[-1].val_acc if self.history else None

    @property
    def best_val_acc(self) -> float | None:
        return max(m.val_acc for m in self.history) if self.history else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (what a store keeps)."""
        return {
            "status": self.status,
            "reason": self.reason,
            "final_val_acc": self.final_val_acc,
            "best_val_acc": self.best_val_acc,
            "epochs_run": self.epochs_run,
            "wall_time_s": self.wall_time_s,
            "steps": self.steps,
            "history": [m.to_dict() for m in self.history],
        }


@contextmanager
def quiet_lightning(enabled: bool) -> Iterator[None]:
    """Silences Lightning's per-Trainer banners (devices, seeds) and loader-worker hints."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # In-memory datasets need no workers; the image loaders choose their own.
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*training batches.*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text


def describe_failure(error: BaseException) -> str:
    """One line saying why a run failed."""
    if isinstance(error, TrainingFailure):
        return str(error)
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    message = message[:500]
    if _is_out_of_memory(error):
        return f"out of memory ({type(error).__name__}: {message})"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


@functools.cache
def _destroy_process_group_at_exit() -> None:
    """Tear the DDP process group down before the interpreter exits (registered once).

    Lightning keeps the group alive between runs, which suits a search's many trainings;
    left to interpreter shutdown, gloo's worker threads can be destroyed out of order and
    abort the process (``terminate called without an active exception``).
    """

    def destroy() -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    atexit.register(destroy)


def train_and_evaluate(
    model: nn.Module | ModelFactory,
    datamodule: ImageClassificationDataModule,
    epochs: int,
    trainer: TrainerSettings | str = "cpu",
    optimizer: OptimizerConfig | None = None,
    on_epoch: EpochSink | None = None,
    time_limit_s: float | None = None,
    seed: int | None = 0,
    callbacks: Sequence[Callback] = (),
    ckpt_path: str | None = None,
    schedule_epochs: int | None = None,
    save_checkpoint: str | None = None,
    stop_rule: StopRule | None = None,
) -> TrainingResult:
    """Train ``model`` on ``datamodule`` for ``epochs`` epochs and report each validated epoch.

    Args:
        model: the network (``batch x 3 x H x W -> batch x num_classes``) or a factory
            building it. A factory is called after seeding, so its initial weights follow
            ``seed``, and its construction errors become a failed result.
        datamodule: its ``num_classes`` must match the network's output width.
        epochs: number of training epochs (the fidelity).
        trainer: a :data:`TRAINER_PRESETS` name or :class:`TrainerSettings`.
        optimizer: optimiser and schedule; AdamW + cosine by default.
        on_epoch: receives each epoch's :class:`EpochMetrics` once (global rank 0 only).
        time_limit_s: wall-time budget of ``fit``; hitting it fails the run.
        seed: seeds the weights and data order; the caller's random state is restored after.
        callbacks: extra Lightning callbacks.
        ckpt_path: a Lightning checkpoint to resume training from (weights, optimiser,
            schedule and epoch); the network is built first, then restored. ``epochs``
            counts from the start of the run, so resuming after 12 epochs with
            ``epochs=33`` trains 21 more.
        schedule_epochs: the epochs the learning-rate schedule spans (default ``epochs``).
        save_checkpoint: where to write a checkpoint after a successful or pruned run (to continue it).
        stop_rule: asked after every validated epoch but the last, on global rank 0, whether
            the run should stop (:class:`~nas.train.callbacks.PruningCallback`). A rule with a
            ``lightning_callback()`` (a peer library's pruning callback) is used through that
            callback instead, and its ``stopped_by(error)`` names the exceptions that mean
            "pruned" rather than "failed".

    Returns:
        The result; ``status`` is ``"failed"`` with a ``reason`` when the run raised,
        diverged, ran out of memory or out of time, ``"pruned"`` when ``stop_rule`` stopped it.
    """
    if epochs < 1:
        raise NASError(f"A candidate needs at least 1 training epoch, got {epochs}.")
    settings = trainer_settings(trainer)
    datamodule.setup("fit")  # dataset errors are configuration errors: they raise here.
    reporter = EvaluationReporter(on_epoch)
    time_limit = TimeLimit(time_limit_s) if time_limit_s is not None else None
    make_callback = getattr(stop_rule, "lightning_callback", None)
    pruning = None if stop_rule is None else make_callback() if make_callback is not None else PruningCallback(stop_rule)
    # The reporter first: an epoch is recorded before anything may stop the run after it.
    guards: list[Callback] = [reporter, NonFiniteLossGuard(), *([time_limit] if time_limit else []), *([pruning] if pruning else []), *callbacks]
    reason: str | None = None
    pruned: str | None = None
    start = time.perf_counter()
    with isolate_rng(), quiet_lightning(settings.quiet), torch_threads(settings.num_threads):
        if seed is not None:
            L.seed_everything(seed, workers=True, verbose=False)
        try:
            lightning_trainer = L.Trainer(max_epochs=epochs, callbacks=guards, **settings.trainer_kwargs())
        except Exception as error:  # e.g. a GPU preset on a machine without one: every candidate would fail
            raise NASError(f"The trainer settings cannot be used here: {describe_failure(error)}") from None
        global_rank, world_size = lightning_trainer.global_rank, lightning_trainer.world_size
        try:
            network = model if isinstance(model, nn.Module) else model()
            module = ClassificationModule(network, datamodule.num_classes, optimizer, schedule_epochs)
            lightning_trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            if save_checkpoint is not None and not lightning_trainer.interrupted:
                lightning_trainer.save_checkpoint(save_checkpoint)
        except Exception as error:  # a candidate's failure of any kind is recorded, not raised
            stopped_by = getattr(stop_rule, "stopped_by", None)
            pruned = stopped_by(error) if stopped_by is not None else None
            reason = None if pruned else describe_failure(error)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        steps = int(lightning_trainer.global_step)
    wall_time = time.perf_counter() - start
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        _destroy_process_group_at_exit()

    history = tuple(reporter.history)
    if pruned is None and isinstance(pruning, PruningCallback):
        pruned = pruning.reason
    if reason is None and time_limit is not None:
        reason = time_limit.reason
    if reason is None and history and not math.isfinite(history[-1].val_loss):
        reason = f"validation loss is non-finite ({history[-1].val_loss}) after epoch {history[-1].epoch}"
    if reason is None and not history:
        reason = "no epoch was validated"
    status: Status = "failed" if reason is not None else "pruned" if pruned is not None else "ok"
    return TrainingResult(
        status=status,
        reason=reason if reason is not None else pruned,
        history=history,
        wall_time_s=wall_time,
        global_rank=global_rank,
        world_size=world_size,
        steps=steps,
    )

