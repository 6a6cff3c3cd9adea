"""Progress a user can watch: bars for long phases, and an estimate of a search's length.

Bars are drawn by tqdm on stderr, and only when stderr is a terminal: a search whose
output goes to a file or a pipe (a log, a CI job, a test) prints no bar characters at
all. ``NAS_PROGRESS=0`` turns them off on a terminal too.

- :func:`progress_bar`: one bar (zero-cost preprocessing, final training, ...);
- :func:`track_runs`: the (strategy, seed) runs of a benchmark as they finish, in worker
  processes or not: a bar, and a log line per run for logs and pipes;
- :class:`SearchProgress`: the search's budget (evaluations, best so far, time left) and,
  below it, the epochs of the candidate training in the foreground;
- :func:`estimate_epoch_seconds`: a few timed training steps of one candidate, from which
  the search announces how long it will roughly take before it starts.

torch and Lightning are imported only by the estimate: drawing bars needs neither.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

if TYPE_CHECKING:

    from nas.space import SearchSpace
    from nas.train.callbacks import EpochMetrics
    from nas.train.data.base import ImageClassificationDataModule

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Environment variable that turns bars off (``0``, ``false``, ``off``, ``no``).
PROGRESS_ENV = "NAS_PROGRESS"


def progress_enabled() -> bool:
    """Whether bars are drawn: stderr is a terminal and :data:`PROGRESS_ENV` does not forbid it."""
    if os.environ.get(PROGRESS_ENV, "").strip().lower() in ("0", "false", "off", "no"):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


#: The budget bar counts in equivalent full evaluations, which are fractions in multi-fidelity searches.
BUDGET_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:g}/{total:g} evaluations [{elapsed}<{remaining}{postfix}]"


def progress_bar(
    total: float | None, description: str, unit: str = "it", leave: bool = True, position: int | None = None, bar_format: str | None = None
) -> tqdm:
    """A tqdm bar on stderr, disabled (a silent no-op) when :func:`progress_enabled` is false."""
    return tqdm(
        bar_format=bar_format,
        total=total,
        desc=description,
        unit=unit,
        leave=leave,
        position=position,
        disable=not progress_enabled(),
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )


def track(items: Iterable[T], total: int, description: str, unit: str = "it") -> Iterator[T]:
    """Iterate over ``items`` with a bar of ``total`` steps."""
    with progress_bar(total, description, unit) as bar:
        for item in items:
            yield item
            bar.update(1)


def track_runs(outcomes: Iterable[tuple[str, T]], total: int, description: str = "benchmark") -> Iterator[tuple[str, T]]:
    """Pass on ``(name, result)`` pairs of finished runs (of ``total``) with a bar and one
    log line per run: runs in worker processes log nowhere the user sees."""
    started = time.perf_counter()
    with bars_with_logging(), progress_bar(total, description, unit="run") as bar:
        for done, (name, result) in enumerate(outcomes, 1):
            elapsed = time.perf_counter() - started
            log.info("%s: %d / %d runs finished (%s), %s elapsed, about %s left", description, done, total, name, format_duration(elapsed), format_duration(elapsed / done * (total - done)))
            bar.update(1)
            yield name, result


@contextmanager
def bars_with_logging() -> Iterator[None]:
    """Route console log records through tqdm while bars are drawn, so lines do not tear bars."""
    if not progress_enabled():
        yield
        return
    with logging_redirect_tqdm():
        yield


class SearchProgress:
    """The bars of a running search.

    The top bar counts the budget in equivalent full evaluations (tqdm's rate and
    remaining time are the estimated time left) and shows the best value so far; the
    second bar, shown while a candidate trains in this process, counts its epochs.

    Args:
        budget: the search's budget, in equivalent full evaluations.
        spent: cost already spent (a resumed search).
        epochs: epochs of a full evaluation, for the epoch bar (``None``: no epoch bar).
    """

    def __init__(self, budget: float, spent: float = 0.0, epochs: int | None = None) -> None:
        self.budget_bar = progress_bar(budget, "search", unit="eval", position=0, bar_format=BUDGET_BAR_FORMAT)
        self.budget_bar.update(min(spent, budget))
        self.epochs = epochs
        self.epoch_bar: tqdm | None = None
        self.evaluations = 0

    def on_epoch(self, metrics: EpochMetrics) -> None:
        """A training epoch of the running candidate ended (the objective's ``on_epoch`` sink)."""
        if self.epochs is None:
            return
        if self.epoch_bar is None:
            self.epoch_bar = progress_bar(self.epochs, f"candidate {self.evaluations + 1}", unit="epoch", leave=False, position=1)
        self.epoch_bar.update(metrics.epoch - self.epoch_bar.n)
        self.epoch_bar.set_postfix(val_acc=f"{100 * metrics.val_acc:.2f}", refresh=False)

    def on_evaluation(self, cost: float, best: float) -> None:
        """An evaluation of ``cost`` ended; ``best`` is the best value so far (``-inf`` before any)."""
        self.evaluations += 1
        if self.epoch_bar is not None:
            self.epoch_bar.close()
            self.epoch_bar = None
        remaining = max(0.0, (self.budget_bar.total or 0.0) - self.budget_bar.n)
        self.budget_bar.update(min(cost, remaining))
        if math.isfinite(best):
            self.budget_bar.set_postfix(best=f"{best:.4g}", refresh=False)

    def close(self) -> None:
        if self.epoch_bar is not None:
            self.epoch_bar.close()
        self.budget_bar.close()


def estimate_epoch_seconds(space: SearchSpace, datamodule: ImageClassificationDataModule, steps: int = 2, seed: int = 0) -> float:
    """Rough seconds of one training epoch (with its validation) of a candidate of ``space``.

    Times ``steps`` forward/backward/update steps of one sampled network on real batches
    after one untimed step, and scales them to the loaders' lengths (a validation step
    counted as a third of a training step). Enough to tell minutes from hours.
    """
    from lightning.pytorch.utilities.seed import isolate_rng

    # Building and training draw from torch's global generator: the search must not notice.
    with isolate_rng():
        return _timed_epoch(space, datamodule, steps, seed)


def _timed_epoch(space: SearchSpace, datamodule: ImageClassificationDataModule, steps: int, seed: int) -> float:
    import torch

    generator = torch.Generator().manual_seed(seed)
    encoding = tuple(int(v) for v in space.sample(1, generator)[0].tolist())
    network = space.to_module(encoding, num_classes=datamodule.num_classes)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    train_loader = datamodule.train_dataloader()
    batches = iter(train_loader)
    network.train()
    timed = 0.0
    for step in range(steps + 1):
        try:
            images, labels = next(batches)
        except StopIteration:
            break
        started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(network(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step > 0:  # the first step pays one-off allocations
            timed += time.perf_counter() - started
    per_step = timed / max(1, min(steps, len(train_loader) - 1))
    return per_step * (len(train_loader) + len(datamodule.val_dataloader()) / 3)


def format_duration(seconds: float | None) -> str:
    """``"4.2 s"``, ``"45 s"``, ``"12 min"``, ``"3.5 h"``; ``"unknown"`` for ``None``."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
