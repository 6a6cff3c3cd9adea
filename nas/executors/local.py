"""The local executor: evaluations one after another in the search's process.
"""
from __future__ import annotations

import os
from typing import Hashable, Sequence

import torch

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
    """One evaluation after another in this process (in a worker process when the objective needs one).

    Args:
        asynchronous: ask the strategy for one suggestion per evaluation instead of its
            own batch. With one worker no time is lost at a batch barrier, so the default
            keeps the strategy's batches (the thesis's 32 suggestions per BO iteration).
        retries: reruns of an evaluation whose worker process died (a DDP objective's).
        devices, gpus_per_trial: see :func:`device_groups`; the first group is pinned.
    """

    def __init__(self, asynchronous: bool = False, retries: int = 0, devices: str | Sequence[int | str] | None = None, gpus_per_trial: int | None = 0) -> None:
        self.asynchronous = asynchronous
        self.retries = check_retries(retries)
        groups = device_groups(devices, gpus_per_trial)
        self.devices = groups[:1] if groups else None

    def backend(self, objective: Objective) -> Backend:
        if needs_own_process(objective):
            return ProcessExecutor(max_workers=1).backend(objective)
        return _InProcessBackend(objective)


