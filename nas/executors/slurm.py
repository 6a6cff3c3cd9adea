"""The Slurm executor: one submitit job per evaluation.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Hashable

from nas.errors import NASError
from nas.executors.payload import Payload, failed_payload, first_line, needs_own_process
from nas.executors.pool import Backend, Executor, check_retries
from nas.executors.process import evaluate_payload
from nas.objectives.base import Objective
from nas.strategies.base import Trial


class _SubmititBackend(Backend):
    def __init__(self, executor: Any, objective: Objective, own_process: bool, cluster: str, poll_s: float) -> None:
        self.executor, self.objective, self.own_process, self.cluster, self.poll_s = executor, objective, own_process, cluster, poll_s

    def launch(self, trial: Trial, devices: tuple[str, ...] | None) -> Hashable:
        return self.executor.submit(evaluate_payload, self.objective, trial, self.own_process)

    def wait_any(self, running: list[Hashable]) -> list[tuple[Hashable, Payload]]:
        # job.done() reads the scheduler's state (sacct on Slurm): a job whose node died is done too.
        while not (done := [job for job in running if job.done()]):  # type: ignore[attr-defined]
            time.sleep(self.poll_s)
        return [(job, self._payload(job)) for job in done]

    def _payload(self, job: Any) -> Payload:
        try:
            return job.result()
        except Exception as error:  # noqa: BLE001 - the task catches the candidate's errors: the job itself died
            return failed_payload(f"the {self.cluster} job {job.job_id} failed: {first_line(error)}", lost=True)

    def abandon(self, handle: Hashable) -> None:
        handle.cancel(check=False)  # type: ignore[attr-defined]


class SlurmExecutor(Executor):
    """One submitit job per evaluation, on Slurm (or as local processes with ``cluster="local"``).

    Args:
        folder: where submitit keeps each job's pickles and logs.
        cluster: ``"slurm"``, ``"local"`` (each job a local process) or ``"debug"`` (in this process).
        max_concurrent: jobs queued or running at once.
        parameters: submitit's ``update_parameters`` arguments: ``timeout_min``, ``nodes``,
            ``cpus_per_task``, ``gpus_per_node``, ``mem_gb``, ``slurm_partition``, ... (nulls dropped).
            For a DDP trainer on Slurm, ``nodes`` and ``tasks_per_node`` default to the
            trainer's ``num_nodes`` and ``devices``: Slurm starts the ranks and Lightning joins them.
        poll_s: how often job states are read.
        asynchronous: a new suggestion each time a job ends (no batch barrier).
        retries: reruns of an evaluation whose job died (preempted, node failure, killed).
    """

    def __init__(
        self,
        folder: str,
        cluster: str = "slurm",
        max_concurrent: int = 8,
        parameters: dict[str, Any] | None = None,
        poll_s: float = 5.0,
        asynchronous: bool = True,
        retries: int = 1,
    ) -> None:
        self.retries = check_retries(retries)
        if cluster not in ("slurm", "local", "debug"):
            raise NASError(f"Unknown executor.cluster {cluster!r}; valid clusters are slurm, local, debug.")
        if max_concurrent < 1:
            raise NASError(f"executor.max_concurrent must be a positive number of jobs, got {max_concurrent}.")
        try:
            import submitit
        except ImportError:
            raise NASError("executor=slurm needs submitit, which is not installed: pip install 'nas-efficient-vision[slurm]'.") from None
        if cluster == "slurm" and not submitit.SlurmExecutor.affinity() > 0:
            raise NASError("executor.cluster=slurm but this machine has no Slurm (sbatch and sacct are not found); run the search on a Slurm login node, or use cluster=local to try the configuration here.")
        self._submitit = submitit
        self.folder = Path(folder)
        self.cluster = cluster
        self.parallelism = max_concurrent
        self.parameters = {key: value for key, value in (parameters or {}).items() if value is not None}
        self.poll_s = poll_s
        self.asynchronous = asynchronous
        self._check_parameters()

    def _check_parameters(self) -> None:
        """Let submitit refuse bad parameters now, before the search starts."""
        with tempfile.TemporaryDirectory(prefix="nas-submitit-check-") as folder:  # nothing in the run directory yet
            try:
                self._submitit.AutoExecutor(folder=folder, cluster=self.cluster).update_parameters(**self.parameters)
            except (TypeError, ValueError, NameError) as error:
                raise NASError(f"Invalid executor.parameters for submitit: {first_line(error)}") from None

    def _executor(self, objective: Objective) -> tuple[Any, bool]:
        """The submitit executor for ``objective``, and whether jobs must start a worker process."""
        parameters = dict(self.parameters)
        own_process = needs_own_process(objective)
        trainer = getattr(objective, "trainer", None)
        if own_process and self.cluster == "slurm" and trainer is not None and isinstance(trainer.devices, int):
            parameters.setdefault("nodes", trainer.num_nodes)
            parameters.setdefault("tasks_per_node", trainer.devices)
            own_process = False  # Slurm's tasks are the ranks
        executor = self._submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        try:
            executor.update_parameters(**parameters)
        except (TypeError, ValueError, NameError) as error:
            raise NASError(f"Invalid executor.parameters for submitit: {first_line(error)}") from None
        return executor, own_process

    def backend(self, objective: Objective) -> Backend:
        executor, own_process = self._executor(objective)
        return _SubmititBackend(executor, objective, own_process, self.cluster, self.poll_s)
