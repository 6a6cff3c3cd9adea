"""The Ray executor: evaluations as Ray tasks, on a local instance or a running cluster.
"""
from __future__ import annotations

import logging
import socket
from typing import Any, Hashable

from nas.errors import NASError
from nas.executors.payload import Payload, failed_payload, first_line, needs_own_process
from nas.executors.pool import Backend, Executor, check_retries
from nas.executors.process import evaluate_payload, python_path
from nas.objectives.base import Objective
from nas.strategies.base import Trial

#: Ray's signals that a task's worker process or node died before it returned (the task
#: itself catches every exception of the candidate, so these say nothing about it).
_RAY_LOST_ERRORS = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "OwnerDiedError", "OutOfMemoryError", "RaySystemError")


#: The objective a Ray worker process deserialised last, by object id: a worker runs many
#: evaluations of the same search, and deserialising a large objective (a whole benchmark
#: table) for each one would cost more than a short evaluation.
_RAY_WORKER_OBJECTIVE: dict[str, Objective] = {}


def evaluate_in_ray_worker(objective_box: list[Any], trial: Trial, own_process: bool) -> Payload:
    """A Ray task: ``objective_box`` holds the objective's object ref (boxed, so that Ray
    does not deserialise it for every task); it is fetched once per worker process."""
    import ray

    ref = objective_box[0]
    key = ref.hex()
    if key not in _RAY_WORKER_OBJECTIVE:
        _RAY_WORKER_OBJECTIVE.clear()
        _RAY_WORKER_OBJECTIVE[key] = ray.get(ref)
    return evaluate_payload(_RAY_WORKER_OBJECTIVE[key], trial, own_process)


class _RayBackend(Backend):
    def __init__(self, ray: Any, task: Any, objective_ref: Any, own_process: bool) -> None:
        self.ray, self.task, self.objective_ref, self.own_process = ray, task, objective_ref, own_process

    def launch(self, trial: Trial, devices: tuple[str, ...] | None) -> Hashable:
        return self.task.remote([self.objective_ref], trial, self.own_process)  # Ray assigns the GPUs

    def wait_any(self, running: list[Hashable]) -> list[tuple[Hashable, Payload]]:
        ray = self.ray
        [done], _ = ray.wait(running, num_returns=1)
        try:
            return [(done, ray.get(done))]
        except ray.exceptions.RayError as error:  # the worker died or the task could not run
            lost = any(type(error).__name__ == name or isinstance(error, getattr(ray.exceptions, name, ())) for name in _RAY_LOST_ERRORS)
            return [(done, failed_payload(f"the Ray task failed: {first_line(error)}", lost=lost))]

    def abandon(self, handle: Hashable) -> None:
        self.ray.cancel(handle, force=True)


class RayExecutor(Executor):
    """Evaluations as Ray tasks, on a local Ray instance or a running cluster.

    Args:
        address: ``None`` starts a local instance for the search (stopped at the end);
            ``"auto"`` or ``"ray://host:10001"`` joins a running cluster, whose nodes must
            have this package installed (or ship it with ``runtime_env``).
        num_cpus: CPUs of a local instance (``None``: all of this machine's).
        num_gpus: GPUs of a local instance (``None``: those Ray finds).
        cpus_per_trial, gpus_per_trial: resources one evaluation reserves (Ray's
            ``num_cpus``/``num_gpus``; Ray sets each task's ``CUDA_VISIBLE_DEVICES``).
        max_concurrent: evaluations at once; ``None``: as many as the resources allow.
        runtime_env: Ray's runtime environment for the tasks (e.g. ``{"working_dir": "."}``).
        asynchronous: a new suggestion each time a task finishes (no batch barrier).
        retries: reruns of an evaluation whose worker or node died (Ray's failure signal);
            the search reruns it, so that the store counts each attempt.

    The search's process keeps the only copy of the results, as with every executor.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        max_concurrent: int | None = None,
        runtime_env: dict[str, Any] | None = None,
        asynchronous: bool = True,
        retries: int = 1,
        num_gpus: int | None = None,
    ) -> None:
        self.retries = check_retries(retries)
        if not cpus_per_trial > 0 or gpus_per_trial < 0:
            raise NASError(f"executor.cpus_per_trial must be positive and gpus_per_trial not negative, got {cpus_per_trial} and {gpus_per_trial}.")
        if max_concurrent is not None and max_concurrent < 1:
            raise NASError(f"executor.max_concurrent must be a positive number or null, got {max_concurrent}.")
        try:
            import ray
        except ImportError:
            raise NASError("executor=ray needs Ray, which is not installed: pip install 'nas-efficient-vision[ray]'.") from None
        self.asynchronous = asynchronous
        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "runtime_env": runtime_env}
            if address is None:
                options["num_cpus"] = num_cpus
                options["num_gpus"] = num_gpus
                # Local workers import what this process imports, as with executor=process.
                env_vars = {"PYTHONPATH": python_path(), **(runtime_env or {}).get("env_vars", {})}
                options["runtime_env"] = {**(runtime_env or {}), "env_vars": env_vars}
            if address not in (None, "auto"):
                _check_reachable(address)
            try:
                ray.init(address=address, **options)
            except (ConnectionError, TimeoutError, RuntimeError) as error:
                raise NASError(f"No Ray cluster could be reached at {address!r} ({first_line(error)}); give a running cluster's address, or null for a local instance.") from None
            self._started_here = True
        # Ray does not rerun tasks itself (max_retries=0): the search reruns a lost one and counts it.
        self._task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=0)(evaluate_in_ray_worker)
        resources = ray.cluster_resources()
        fits = int(resources.get("CPU", 1) // cpus_per_trial)
        if gpus_per_trial > 0:
            fits = min(fits, int(resources.get("GPU", 0) // gpus_per_trial))
        if fits < 1:
            self.close()
            raise NASError(f"The Ray cluster has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs, too few for one trial of {cpus_per_trial:g} CPUs and {gpus_per_trial:g} GPUs.")
        self.parallelism = min(fits, max_concurrent or fits)
        self._objective: Objective | None = None
        self._objective_ref: Any = None

    def backend(self, objective: Objective) -> Backend:
        if self._objective is not objective:  # sent to the object store once per search, not per batch
            self._objective, self._objective_ref = objective, self._ray.put(objective)
        return _RayBackend(self._ray, self._task, self._objective_ref, needs_own_process(objective))

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()
            self._started_here = False


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a cluster address nothing listens on (Ray itself would retry for minutes)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        host, port = target, "10001" if address.startswith("ray://") else "6379"
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise NASError(f"No Ray cluster could be reached at {address!r} ({error.strerror or error}); give a running cluster's address, or null for a local instance.") from None


