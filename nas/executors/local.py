"""The local executor: evaluations one after another in the search's process.
"""
from __future__ import annotations

import os
from typing import Hashable, Sequence

import torch

from nas.errors import whole_number
from nas.executors.payload import Payload, evaluate_here, needs_own_process
from nas.executors.pool import (
    VISIBLE_DEVICES_ENV,
    Backend,
    Executor,
    check_retries,
    device_groups,
)
from nas.executors.process import ProcessExecutor
from nas.objectives.base import Objective
from nas.strategies.base import Trial


class _InProcessBackend(Backend):
    """Evaluates in this process, when waited for: one evaluation at a time."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self._count = 0

    def launch(self, trial: Trial, devices: tuple[str, ...] | None) -> Hashable:
        if devices is not None and not torch.cuda.is_initialized():
            os.environ[VISIBLE_DEVICES_ENV] = ",".join(devices)  # read by CUDA when it starts
        self._count += 1
        return (self._count, trial)

    def wait_any(self, running: list[Hashable]) -> list[tuple[Hashable, Payload]]:
        handle = running[0]
        return [(handle, evaluate_here(self.objective, handle[1]))]  # type: ignore[index]


class LocalExecutor(Executor):
    """Evaluations on this machine: one after another in this process (in a worker process
    when the objective needs one), or ``max_workers`` at once, each in a worker process.

    Args:
        max_workers: evaluations at once. Above 1, they run in ``max_workers`` worker
            processes that start once and evaluate one candidate after another
            (:class:`~nas.executors.process.ServingWorker`; a fresh process per candidate for a
            DDP trainer), and the strategy is asked for one suggestion each time a worker frees up.
        asynchronous: ask the strategy for one suggestion per evaluation instead of its
            own batch. With one worker no time is lost at a batch barrier, so the default
            keeps the strategy's batches (the thesis's 32 suggestions per BO iteration).
        retries: reruns of an evaluation whose worker process died.
        devices, gpus_per_trial: see :func:`device_groups`; the first group is pinned.
    """

    def __init__(
        self, max_workers: int = 1, asynchronous: bool = False, retries: int = 0, devices: str | Sequence[int | str] | None = None, gpus_per_trial: int | None = 0
    ) -> None:
        self.parallelism = whole_number("executor.max_workers", max_workers, minimum=1)
        # More than one worker idles at a batch barrier whenever the strategy's batch is smaller.
        self.asynchronous = asynchronous or self.parallelism > 1
        self.retries = check_retries(retries)
        groups = device_groups(devices, gpus_per_trial)
        self.devices = groups[:1] if groups and self.parallelism == 1 else groups

    def backend(self, objective: Objective) -> Backend:
        if self.parallelism > 1 or needs_own_process(objective):
            return ProcessExecutor(max_workers=self.parallelism, reuse_workers=True).backend(objective)
        return _InProcessBackend(objective)


