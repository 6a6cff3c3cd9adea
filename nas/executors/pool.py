"""The executor interface and the pool of running evaluations every executor shares:
slots, GPU groups, retries of lost workers.
"""
from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Callable, Hashable, Iterator, Sequence

import torch

from nas.errors import NASError
from nas.executors.payload import LOST, Finished, Payload, result_of
from nas.objectives.base import Evaluation, Objective
from nas.strategies.base import Trial

log = logging.getLogger(__name__)


#: The GPUs a CUDA process may see; a pinned worker gets its own ids here.
VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"


def device_groups(devices: str | Sequence[int | str] | None, gpus_per_trial: int | None) -> list[tuple[str, ...]] | None:
    """The GPU ids of each concurrent evaluation, ``gpus_per_trial`` ids each, or ``None`` for no pinning.

    Args:
        devices: the GPU ids to share out; ``None`` or ``"auto"``: those this process may
            see (``CUDA_VISIBLE_DEVICES`` when set, else every GPU torch finds).
        gpus_per_trial: GPUs of one evaluation (more than one for a DDP trainer);
            ``None``: one per evaluation when there are GPUs, none otherwise.
    """
    if gpus_per_trial is not None and gpus_per_trial < 0:
        raise NASError(f"executor.gpus_per_trial must be a number of GPUs (0 or more) or null, got {gpus_per_trial}.")
    if devices is None or devices == "auto":
        visible = os.environ.get(VISIBLE_DEVICES_ENV)
        if visible is not None:
            ids = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
        else:
            ids = [str(i) for i in range(torch.cuda.device_count())]
    elif isinstance(devices, str):
        raise NASError(f"executor.devices must be a list of GPU ids, 'auto' or null, got {devices!r}.")
    else:
        ids = [str(d) for d in devices]
    if len(set(ids)) != len(ids):
        raise NASError(f"executor.devices lists a GPU twice: {ids}.")
    per_trial = (1 if ids else 0) if gpus_per_trial is None else gpus_per_trial
    if per_trial == 0:
        return None
    if len(ids) < per_trial:
        raise NASError(f"Each evaluation asks for {per_trial} GPUs (executor.gpus_per_trial) but only {len(ids)} are available (ids: {', '.join(ids) or 'none'}); lower gpus_per_trial or set executor.devices.")
    return [tuple(ids[i : i + per_trial]) for i in range(0, len(ids) - per_trial + 1, per_trial)]


def check_retries(retries: int) -> int:
    if not isinstance(retries, int) or retries < 0:
        raise NASError(f"executor.retries must be a number of reruns (0 or more) of an evaluation whose worker died, got {retries}.")
    return retries


@dataclass(frozen=True)
class Arrival:
    """A finished evaluation of a :class:`Pool`: its key, result, seconds, and how many times it ran."""

    key: Hashable
    evaluation: Evaluation
    seconds: float
    attempts: int


class Backend(ABC):
    """How an executor starts, watches and stops the evaluations of one objective."""

    @abstractmethod
    def launch(self, trial: Trial, devices: tuple[str, ...] | None) -> Hashable:
        """Start evaluating ``trial`` (seeing only ``devices`` when given); return its handle."""

    @abstractmethod
    def wait_any(self, running: list[Hashable]) -> list[tuple[Hashable, Payload]]:
        """Block until at least one of ``running`` has finished; return the finished ones with their payloads."""

    def abandon(self, handle: Hashable) -> None:
        """Stop a running evaluation that is no longer wanted."""

    def close(self) -> None:
        """Release what this objective's evaluations hold (temporary files)."""


class Pool:
    """The evaluations of one objective on an executor, submitted one by one as slots free up.

    A worker, task or node that dies (the backend's payload says ``lost``) gets its trial
    launched again, up to ``retries`` more times, on the same GPUs; then the trial fails
    with the reason. ``on_retry(key, reason)`` is told of each rerun (the store counts
    attempts). Each running trial holds one group of ``devices`` (``None``: no pinning).
    """

    def __init__(
        self,
        backend: Backend,
        parallelism: int,
        retries: int = 0,
        devices: list[tuple[str, ...]] | None = None,
        on_retry: Callable[[Hashable, str], None] | None = None,
    ) -> None:
        self.backend = backend
        self.parallelism = parallelism if devices is None else min(parallelism, len(devices))
        self.retries = retries
        self.free_devices = list(devices) if devices is not None else None
        self.on_retry = on_retry
        self._running: dict[Hashable, tuple[Hashable, Trial, tuple[str, ...] | None]] = {}  # handle -> (key, trial, devices)
        self._attempts: dict[Hashable, int] = {}

    @property
    def busy(self) -> int:
        return len(self._running)

    @property
    def free(self) -> int:
        return self.parallelism - len(self._running)

    def submit(self, key: Hashable, trial: Trial) -> None:
        if self.free < 1:
            raise RuntimeError("no free slot in the pool")  # the caller checks `free` first
        devices = self.free_devices.pop(0) if self.free_devices is not None else None
        self._attempts[key] = 1
        self._launch(key, trial, devices)

    def _launch(self, key: Hashable, trial: Trial, devices: tuple[str, ...] | None) -> None:
        self._running[self.backend.launch(trial, devices)] = (key, trial, devices)

    def wait(self) -> list[Arrival]:
        """Block until at least one submitted trial has finished for good (reruns happen here)."""
        while True:
            arrivals = []
            for handle, payload in self.backend.wait_any(list(self._running)):
                key, trial, devices = self._running.pop(handle)
                evaluation, seconds = result_of(payload)
                attempts = self._attempts[key]
                if payload.get(LOST) and attempts <= self.retries:
                    log.warning("rerunning an evaluation whose worker was lost (%s); attempt %d of %d", evaluation.error, attempts + 1, self.retries + 1)
                    self._attempts[key] = attempts + 1
                    if self.on_retry is not None:
                        self.on_retry(key, evaluation.error or "")
                    self._launch(key, trial, devices)
                    continue
                if payload.get(LOST) and attempts > 1:
                    evaluation = Evaluation(value=math.nan, status="failed", error=f"{evaluation.error} (on each of {attempts} attempts)")
                if self.free_devices is not None and devices is not None:
                    self.free_devices.append(devices)
                del self._attempts[key]
                arrivals.append(Arrival(key, evaluation, seconds, attempts))
            if arrivals:
                return arrivals

    def close(self) -> None:
        """Stop whatever still runs (the search ended early: an error, Ctrl-C) and release the backend."""
        try:
            for handle in list(self._running):
                self.backend.abandon(handle)
            self._running.clear()
        finally:
            self.backend.close()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


class Executor(ABC):
    """Runs evaluations; use it as a context manager around the search.

    Attributes:
        parallelism: evaluations it runs at once.
        asynchronous: whether the search asks the strategy for a new suggestion each time a
            worker frees up (``True``), or asks for a whole batch and waits for all of it.
        retries: reruns of an evaluation whose worker, task or node died.
        devices: the GPU ids of each concurrent evaluation (``None``: no pinning).
    """

    parallelism: int = 1
    asynchronous: bool = True
    retries: int = 0
    devices: list[tuple[str, ...]] | None = None

    @abstractmethod
    def backend(self, objective: Objective) -> Backend:
        """The backend that evaluates ``objective`` on this executor."""

    def pool(self, objective: Objective, on_retry: Callable[[Hashable, str], None] | None = None) -> Pool:
        """A pool for the evaluations of ``objective`` (close it, or use it as a context manager)."""
        return Pool(self.backend(objective), self.parallelism, self.retries, self.devices, on_retry)

    def run(self, objective: Objective, trials: Sequence[Trial]) -> Iterator[Finished]:
        """Evaluate ``trials`` and yield each result as it finishes (in any order), keyed by position."""
        with self.pool(objective) as pool:
            waiting = list(enumerate(trials))
            while waiting or pool.busy:
                while waiting and pool.free > 0:
                    pool.submit(*waiting.pop(0))
                for arrival in pool.wait():
                    yield arrival.key, arrival.evaluation, arrival.seconds  # type: ignore[misc]

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release what the executor holds (processes, a Ray instance it started)."""

