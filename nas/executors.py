"""Where a batch's evaluations run: this process, child processes, a Ray cluster, or Slurm.

The search hands an executor the trials of one batch. The executor runs as many of them at
once as it can and yields each result as soon as it finishes; the search stores it at once
(a crash loses nothing finished) and tells the strategy the batch in its proposed order,
so a search's course does not depend on which evaluation happened to finish first.

Executors (config group ``executor``):

- :class:`LocalExecutor` (``local``, default): one after another in the search's process.
- :class:`ProcessExecutor` (``process``): each evaluation in a fresh ``python -m nas.worker``
  process, ``max_workers`` at once. A candidate that kills its interpreter (a segfault,
  the kernel's out-of-memory killer) fails alone, and ``timeout_s`` is enforced by killing.
- :class:`RayExecutor` (``ray``): Ray tasks, on a local instance started for the search or
  on a running cluster at ``address``.
- :class:`SlurmExecutor` (``slurm``): one submitit job per evaluation.

An objective whose ``needs_own_process`` is true (a Lightning ``ddp`` trainer, which starts
the calling script again for every extra process) is always trained through
``python -m nas.worker``, whatever the executor, so that the copies Lightning starts run one
evaluation instead of a whole search. On Slurm the job's tasks are the DDP processes instead.

Results travel between processes as *payloads*: ``{"evaluation": {...}, "seconds": s}``, or
``{"configuration_error": message}`` for a :class:`~nas.errors.NASError`, which stops the
search wherever it was raised because it would fail every candidate alike.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import pickle
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Hashable, Iterator, Sequence

import torch

from nas.errors import NASError
from nas.objectives.base import Evaluation, Objective
from nas.strategies.base import Trial

log = logging.getLogger(__name__)

Payload = dict[str, Any]
#: One finished evaluation: its position in the submitted trials, the result, and the
#: seconds the evaluation itself took (measured where it ran).
Finished = tuple[int, Evaluation, float]

#: Variables that tell a process its place in a distributed job. A worker inherits the
#: search's environment without them, so that it does not mistake itself for a rank of a
#: job the search itself may be running in.
_DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


def evaluate_safely(objective: Objective, trial: Trial) -> Evaluation:
    """Evaluate one trial; an unexpected exception becomes a failed evaluation with its reason.

    Configuration errors (:class:`NASError`) still stop the search: they would fail every
    candidate alike.
    """
    try:
        evaluation = objective.evaluate(trial.encoding, trial.fidelity)
    except NASError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken candidate must not end the search
        return Evaluation(value=math.nan, status="failed", error=f"{type(exc).__name__}: {exc}")
    if evaluation.status == "ok" and not math.isfinite(evaluation.value):
        return Evaluation(value=math.nan, cost=evaluation.cost, status="failed", metrics=evaluation.metrics, error="non-finite objective value")
    return evaluation


def needs_own_process(objective: Objective) -> bool:
    """Whether ``objective`` must not evaluate inside the search's process (see the module doc)."""
    return bool(getattr(objective, "needs_own_process", False))


def failed_payload(reason: str, seconds: float = 0.0) -> Payload:
    return {"evaluation": asdict(Evaluation(value=math.nan, status="failed", error=reason)), "seconds": seconds}


def evaluate_here(objective: Objective, trial: Trial) -> Payload:
    """Evaluate in this process and return the payload."""
    started = time.perf_counter()
    try:
        evaluation = evaluate_safely(objective, trial)
    except NASError as error:
        return {"configuration_error": str(error)}
    return {"evaluation": asdict(evaluation), "seconds": time.perf_counter() - started}


def evaluate_payload(objective: Objective, trial: Trial, own_process: bool) -> Payload:
    """Evaluate here, or in a ``python -m nas.worker`` child when ``own_process`` (what remote tasks run)."""
    if not own_process:
        return evaluate_here(objective, trial)
    with tempfile.TemporaryDirectory(prefix="nas-worker-") as folder:
        objective_file = Path(folder) / "objective.pkl"
        key = dump_objective(objective, objective_file)
        child = WorkerProcess.start(objective_file, key, trial, Path(folder) / "job")
        child.process.wait()
        return child.collect()


def result_of(payload: Payload) -> tuple[Evaluation, float]:
    """The evaluation and its seconds; a configuration error is raised again here."""
    if "configuration_error" in payload:
        raise NASError(payload["configuration_error"])
    return Evaluation(**payload["evaluation"]), float(payload["seconds"])


#: The environment variable that hands a worker the key of its objective file.
OBJECTIVE_KEY_ENV = "NAS_OBJECTIVE_KEY"
_DIGEST_BYTES = 32  # SHA-256


def dump_objective(objective: Objective, path: Path) -> str:
    """Write ``objective`` for the workers of this search, signed; return the key (hex).

    This file is a message from the search to the workers it starts, not a saved artifact:
    it lives in a private temporary folder for one batch. Only pickle carries an arbitrary
    objective (cloudpickle, so a user's closures and lambda-built spaces travel too), so the
    file is signed with a fresh key that only the search and its workers hold (in their
    environment): :func:`load_objective` unpickles nothing that the search did not write.
    """
    import cloudpickle

    try:
        data = cloudpickle.dumps(objective)
    except Exception as error:  # noqa: BLE001 - whatever the pickler rejects, say what it was
        raise NASError(f"The objective cannot be sent to a worker process ({type(error).__name__}: {error}); use executor=local.") from None
    key = secrets.token_bytes(_DIGEST_BYTES)
    path.write_bytes(hmac.new(key, data, hashlib.sha256).digest() + data)
    return key.hex()


def load_objective(path: Path, key: str) -> Objective:
    """The objective :func:`dump_objective` wrote with ``key``; refuses any other file."""
    blob = path.read_bytes()
    digest, data = blob[:_DIGEST_BYTES], blob[_DIGEST_BYTES:]
    try:
        expected = hmac.new(bytes.fromhex(key), data, hashlib.sha256).digest()
    except ValueError:
        expected = b""
    if not hmac.compare_digest(digest, expected):
        raise NASError(f"{path} was not written by the search that started this worker (its signature does not match); it is not loaded.")
    return pickle.loads(data)


def _python_path() -> str:
    """This process's import path, for workers that must import what it imports."""
    return os.pathsep.join(p for p in sys.path if p)


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""


@dataclass(eq=False)  # hashed by identity: a handle in the pool
class WorkerProcess:
    """One running ``python -m nas.worker``: a new session, so that a kill reaches its DDP ranks too."""

    process: subprocess.Popen
    result_file: Path
    log_file: Path
    started: float

    @classmethod
    def start(cls, objective_file: Path, key: str, trial: Trial, stem: Path) -> "WorkerProcess":
        trial_file, result_file, log_file = stem.with_suffix(".trial.json"), stem.with_suffix(".result.json"), stem.with_suffix(".log")
        trial_file.write_text(json.dumps({"encoding": list(trial.encoding), "fidelity": trial.fidelity}))
        env = {key: value for key, value in os.environ.items() if key not in _DISTRIBUTED_ENV}
        # The worker imports what this process imports (the objective may live in a module
        # that is importable here only through sys.path, e.g. a test's).
        env["PYTHONPATH"] = _python_path()
        env["NAS_SEARCH_PID"] = str(os.getpid())  # nas.worker.PARENT_PID_ENV
        env[OBJECTIVE_KEY_ENV] = key
        # The search's thread setting (config `threads`), which torch would not inherit:
        # workers sharing the cores with all threads each slow every step.
        env["NAS_TORCH_THREADS"] = str(torch.get_num_threads())  # nas.worker.THREADS_ENV
        with log_file.open("w") as log_handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "nas.worker", str(objective_file), str(trial_file), str(result_file)],
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return cls(process, result_file, log_file, time.perf_counter())

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()

    def collect(self) -> Payload:
        """The payload the worker wrote, or a failed one saying how the worker ended."""
        if self.result_file.exists():
            return json.loads(self.result_file.read_text())
        detail = _last_line(self.log_file)
        reason = f"the worker process {_describe_exit(self.process.returncode)}" + (f": {detail}" if detail else "")
        return failed_payload(reason, time.perf_counter() - self.started)


def run_pool(
    trials: Sequence[Trial],
    parallelism: int,
    launch: Callable[[int, Trial], Hashable],
    wait_any: Callable[[list[Hashable]], list[tuple[Hashable, Payload]]],
    abandon: Callable[[Hashable], None],
) -> Iterator[Finished]:
    """Keep up to ``parallelism`` trials running and yield each result as it arrives.

    ``launch`` starts a trial and returns its handle; ``wait_any`` blocks until at least
    one running handle has finished and returns the finished ones with their payloads;
    ``abandon`` stops a handle still running when the consumer stops early (an error,
    Ctrl-C), so that nothing keeps computing for a search that has ended.
    """
    waiting = list(enumerate(trials))
    running: dict[Hashable, int] = {}
    try:
        while waiting or running:
            while waiting and len(running) < parallelism:
                position, trial = waiting.pop(0)
                running[launch(position, trial)] = position
            for handle, payload in wait_any(list(running)):
                yield running.pop(handle), *result_of(payload)
    finally:
        for handle in running:
            abandon(handle)


class Executor(ABC):
    """Runs the trials of a batch; use it as a context manager around the search."""

    #: How many evaluations it runs at once; the search proposes at least this many per batch.
    parallelism: int = 1

    @abstractmethod
    def run(self, objective: Objective, trials: Sequence[Trial]) -> Iterator[Finished]:
        """Evaluate ``trials`` and yield each result as it finishes (in any order)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release what the executor holds (processes, a Ray instance it started)."""


class LocalExecutor(Executor):
    """One evaluation after another in this process (in a worker process when the objective needs one)."""

    def run(self, objective: Objective, trials: Sequence[Trial]) -> Iterator[Finished]:
        if needs_own_process(objective):
            yield from ProcessExecutor(max_workers=1).run(objective, trials)
            return
        for position, trial in enumerate(trials):
            yield position, *result_of(evaluate_here(objective, trial))


class ProcessExecutor(Executor):
    """Each evaluation in a fresh ``python -m nas.worker`` process, ``max_workers`` at once.

    Args:
        max_workers: evaluations running at once. Each worker pays an interpreter start and
            the imports (seconds), so this pays off for evaluations that take longer than that.
        timeout_s: wall-clock limit of one worker; one that runs longer is killed (with its
            DDP processes) and its evaluation fails. ``None``: no limit beyond the objective's.
        poll_s: how often finished workers are looked for.
    """

    def __init__(self, max_workers: int = 2, timeout_s: float | None = None, poll_s: float = 0.05) -> None:
        if max_workers < 1:
            raise NASError(f"executor.max_workers must be a positive number of processes, got {max_workers}.")
        if timeout_s is not None and not timeout_s > 0:
            raise NASError(f"executor.timeout_s must be a positive number of seconds or null, got {timeout_s}.")
        self.parallelism = max_workers
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    def run(self, objective: Objective, trials: Sequence[Trial]) -> Iterator[Finished]:
        with tempfile.TemporaryDirectory(prefix="nas-workers-") as folder:
            objective_file = Path(folder) / "objective.pkl"
            key = dump_objective(objective, objective_file)

            def launch(position: int, trial: Trial) -> WorkerProcess:
                return WorkerProcess.start(objective_file, key, trial, Path(folder) / f"job{position}")

            yield from run_pool(trials, self.parallelism, launch, self._wait_any, WorkerProcess.kill)  # type: ignore[arg-type]

    def _wait_any(self, running: list[WorkerProcess]) -> list[tuple[WorkerProcess, Payload]]:
        while True:
            finished = []
            for child in running:
                if child.process.poll() is not None:
                    finished.append((child, child.collect()))
                elif self.timeout_s is not None and time.perf_counter() - child.started >= self.timeout_s:
                    child.kill()
                    reason = f"the worker process ran longer than the executor's limit of {self.timeout_s:g} s and was killed"
                    finished.append((child, failed_payload(reason, time.perf_counter() - child.started)))
            if finished:
                return finished
            time.sleep(self.poll_s)


class RayExecutor(Executor):
    """Evaluations as Ray tasks, on a local Ray instance or a running cluster.

    Args:
        address: ``None`` starts a local instance for the search (stopped at the end);
            ``"auto"`` or ``"ray://host:10001"`` joins a running cluster, whose nodes must
            have this package installed (or ship it with ``runtime_env``).
        num_cpus: CPUs of a local instance (``None``: all of this machine's).
        cpus_per_trial, gpus_per_trial: resources one evaluation reserves.
        max_concurrent: evaluations at once; ``None``: as many as the resources allow.
        runtime_env: Ray's runtime environment for the tasks (e.g. ``{"working_dir": "."}``).

    A task is not retried when its worker dies (that is the candidate's failure), and the
    search's process keeps the only copy of the results, as with every executor.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        max_concurrent: int | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise NASError("executor=ray needs Ray, which is not installed: pip install 'nas-efficient-vision[ray]'.") from None
        if not cpus_per_trial > 0 or gpus_per_trial < 0:
            raise NASError(f"executor.cpus_per_trial must be positive and gpus_per_trial not negative, got {cpus_per_trial} and {gpus_per_trial}.")
        if max_concurrent is not None and max_concurrent < 1:
            raise NASError(f"executor.max_concurrent must be a positive number or null, got {max_concurrent}.")
        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "runtime_env": runtime_env}
            if address is None:
                options["num_cpus"] = num_cpus
                # Local workers import what this process imports, as with executor=process.
                env_vars = {"PYTHONPATH": _python_path(), **(runtime_env or {}).get("env_vars", {})}
                options["runtime_env"] = {**(runtime_env or {}), "env_vars": env_vars}
            try:
                ray.init(address=address, **options)
            except ConnectionError as error:
                raise NASError(f"No Ray cluster could be reached at {address!r} ({error}); give a running cluster's address, or null for a local instance.") from None
            self._started_here = True
        self._task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=0)(evaluate_payload)
        resources = ray.cluster_resources()
        fits = int(resources.get("CPU", 1) // cpus_per_trial)
        if gpus_per_trial > 0:
            fits = min(fits, int(resources.get("GPU", 0) // gpus_per_trial))
        if fits < 1:
            raise NASError(f"The Ray cluster has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs, too few for one trial of {cpus_per_trial:g} CPUs and {gpus_per_trial:g} GPUs.")
        self.parallelism = min(fits, max_concurrent or fits)
        self._objective: Objective | None = None
        self._objective_ref: Any = None

    def run(self, objective: Objective, trials: Sequence[Trial]) -> Iterator[Finished]:
        ray, task = self._ray, self._task
        if self._objective is not objective:  # sent to the object store once per search, not per batch
            self._objective, self._objective_ref = objective, ray.put(objective)
        objective_ref, own_process = self._objective_ref, needs_own_process(objective)

        def wait_any(running: list[Any]) -> list[tuple[Any, Payload]]:
            [done], _ = ray.wait(running, num_returns=1)
            try:
                return [(done, ray.get(done))]
            except ray.exceptions.RayError as error:  # the worker died or the task could not run
                return [(done, failed_payload(f"the Ray task failed: {_first_line(error)}"))]

        def launch(position: int, trial: Trial) -> Any:
            return task.remote(objective_ref, trial, own_process)

        yield from run_pool(trials, self.parallelism, launch, wait_any, lambda ref: ray.cancel(ref, force=True))

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()
            self._started_here = False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:500]


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
    """

    def __init__(self, folder: str, cluster: str = "slurm", max_concurrent: int = 8, parameters: dict[str, Any] | None = None, poll_s: float = 5.0) -> None:
        try:
            import submitit
        except ImportError:
            raise NASError("executor=slurm needs submitit, which is not installed: pip install 'nas-efficient-vision[slurm]'.") from None
        if cluster not in ("slurm", "local", "debug"):
            raise NASError(f"Unknown executor.cluster {cluster!r}; valid clusters are slurm, local, debug.")
        if max_concurrent < 1:
            raise NASError(f"executor.max_concurrent must be a positive number of jobs, got {max_concurrent}.")
        self._submitit = submitit
        self.folder = Path(folder)
        self.cluster = cluster
        self.parallelism = max_concurrent
        self.parameters = {key: value for key, value in (parameters or {}).items() if value is not None}
        self.poll_s = poll_s

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
        except (TypeError, ValueError) as error:
            raise NASError(f"Invalid executor.parameters for submitit: {_first_line(error)}") from None
        return executor, own_process

    def run(self, objective: Objective, trials: Sequence[Trial]) -> Iterator[Finished]:
        executor, own_process = self._executor(objective)

        def wait_any(running: list[Any]) -> list[tuple[Any, Payload]]:
            while not (done := [job for job in running if job.done()]):
                time.sleep(self.poll_s)
            return [(job, self._payload(job)) for job in done]

        def launch(position: int, trial: Trial) -> Any:
            return executor.submit(evaluate_payload, objective, trial, own_process)

        yield from run_pool(trials, self.parallelism, launch, wait_any, lambda job: job.cancel(check=False))

    def _payload(self, job: Any) -> Payload:
        try:
            return job.result()
        except Exception as error:  # noqa: BLE001 - a job that died is its candidate's failure
            return failed_payload(f"the {self.cluster} job {job.job_id} failed: {_first_line(error)}")
