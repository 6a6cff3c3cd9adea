"""Where evaluations run: this process, child processes, a Ray cluster, or Slurm.

The search opens a :class:`Pool` of the executor for its objective, submits one trial per
free slot and waits for any to finish (no batch barrier unless the executor is set to
batches, see :mod:`nas.search`). A worker, task or node that dies before it returns a
result (a killed process, Ray's ``WorkerCrashedError``/``NodeDiedError``, a Slurm job
that ended without one) has its trial run again, up to ``retries`` times, then the trial
fails with the reason; the search learns of it through the engine's own failure signal
(the process's exit, Ray's task state, the scheduler's job state), so it never waits on a
lost worker.

GPUs: the local and process executors share ``devices`` out in groups of
``gpus_per_trial`` (one per candidate by default; more for a DDP trainer) and pin each
worker to its group with ``CUDA_VISIBLE_DEVICES``; Ray reserves ``gpus_per_trial`` of its
own GPUs per task and pins them itself; on Slurm, ``parameters.gpus_per_node``.

Executors (config group ``executor``):

- :class:`LocalExecutor` (``local``, default): one after another in the search's process.
- :class:`ProcessExecutor` (``process``): each evaluation in a fresh ``python -m nas.worker``
  process, ``max_workers`` at once (at most one per GPU group). A candidate that kills its
  interpreter (a segfault, the kernel's out-of-memory killer) fails alone after its
  retries, and ``timeout_s`` is enforced by killing.
- :class:`RayExecutor` (``ray``): Ray tasks, on a local instance started for the search or
  on a running cluster at ``address``.
- :class:`SlurmExecutor` (``slurm``): one submitit job per evaluation.

An objective whose ``needs_own_process`` is true (a Lightning ``ddp`` trainer, which starts
the calling script again for every extra process) is always trained through
``python -m nas.worker``, whatever the executor, so that the copies Lightning starts run one
evaluation instead of a whole search. On Slurm the job's tasks are the DDP processes instead.

Results travel between processes as *payloads*: ``{"evaluation": {...}, "seconds": s}``
(with ``"lost": true`` when the worker died without a result), or
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
import socket
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
        return Evaluation(value=math.nan, cost=planned_cost(objective, trial), status="failed", error=f"{type(exc).__name__}: {exc}")
    if evaluation.status == "ok" and not math.isfinite(evaluation.value):
        return Evaluation(value=math.nan, cost=evaluation.cost, status="failed", metrics=evaluation.metrics, error="non-finite objective value")
    return evaluation


def planned_cost(objective: Objective, trial: Trial) -> float:
    """What ``trial`` was to cost: an evaluation that fails is charged the fidelity it ran at
    (a full evaluation for objectives that do not say)."""
    cost_of = getattr(objective, "planned_cost", None)
    return float(cost_of(trial.fidelity)) if cost_of is not None else 1.0


def needs_own_process(objective: Objective) -> bool:
    """Whether ``objective`` must not evaluate inside the search's process (see the module doc)."""
    return bool(getattr(objective, "needs_own_process", False))


#: Payload key set when the worker, task or node died before it returned a result: the
#: evaluation itself said nothing, so it may run again (``executor.retries``).
LOST = "lost"


def failed_payload(reason: str, seconds: float = 0.0, lost: bool = False) -> Payload:
    payload: Payload = {"evaluation": asdict(Evaluation(value=math.nan, status="failed", error=reason)), "seconds": seconds}
    if lost:
        payload[LOST] = True
    return payload


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


#: The GPUs a CUDA process may see; a pinned worker gets its own ids here.
VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
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
    def start(cls, objective_file: Path, key: str, trial: Trial, stem: Path, devices: tuple[str, ...] | None = None) -> "WorkerProcess":
        """Start a worker for ``trial``; ``devices``: the GPU ids it may see (``None``: the search's)."""
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
        if devices is not None:
            env[VISIBLE_DEVICES_ENV] = ",".join(devices)
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
        return failed_payload(reason, time.perf_counter() - self.started, lost=True)


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


class _ProcessBackend(Backend):
    def __init__(self, objective: Objective, timeout_s: float | None, poll_s: float) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="nas-workers-")
        self.objective_file = Path(self._folder.name) / "objective.pkl"
        self.key = dump_objective(objective, self.objective_file)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._launched = 0

    def launch(self, trial: Trial, devices: tuple[str, ...] | None) -> Hashable:
        self._launched += 1
        return WorkerProcess.start(self.objective_file, self.key, trial, Path(self._folder.name) / f"job{self._launched}", devices)

    def wait_any(self, running: list[Hashable]) -> list[tuple[Hashable, Payload]]:
        while True:
            finished = []
            for child in running:
                assert isinstance(child, WorkerProcess)
                if child.process.poll() is not None:
                    finished.append((child, child.collect()))
                elif self.timeout_s is not None and time.perf_counter() - child.started >= self.timeout_s:
                    child.kill()
                    reason = f"the worker process ran longer than the executor's limit of {self.timeout_s:g} s and was killed"
                    finished.append((child, failed_payload(reason, time.perf_counter() - child.started)))
            if finished:
                return finished
            time.sleep(self.poll_s)

    def abandon(self, handle: Hashable) -> None:
        assert isinstance(handle, WorkerProcess)
        handle.kill()

    def close(self) -> None:
        self._folder.cleanup()


class ProcessExecutor(Executor):
    """Each evaluation in a fresh ``python -m nas.worker`` process, ``max_workers`` at once.

    Args:
        max_workers: evaluations running at once. Each worker pays an interpreter start and
            the imports (seconds), so this pays off for evaluations that take longer than that.
        timeout_s: wall-clock limit of one worker; one that runs longer is killed (with its
            DDP processes) and its evaluation fails. ``None``: no limit beyond the objective's.
        poll_s: how often finished workers are looked for.
        asynchronous: a new suggestion each time a worker frees up (no batch barrier).
        retries: reruns of an evaluation whose worker process died without a result.
        devices, gpus_per_trial: the GPUs shared out between workers (see
            :func:`device_groups`); each worker sees only its own through
            ``CUDA_VISIBLE_DEVICES``, and no more workers run than there are groups.
    """

    def __init__(
        self,
        max_workers: int = 2,
        timeout_s: float | None = None,
        poll_s: float = 0.05,
        asynchronous: bool = True,
        retries: int = 1,
        devices: str | Sequence[int | str] | None = None,
        gpus_per_trial: int | None = None,
    ) -> None:
        if max_workers < 1:
            raise NASError(f"executor.max_workers must be a positive number of processes, got {max_workers}.")
        if timeout_s is not None and not timeout_s > 0:
            raise NASError(f"executor.timeout_s must be a positive number of seconds or null, got {timeout_s}.")
        self.retries = check_retries(retries)
        self.devices = device_groups(devices, gpus_per_trial)
        self.parallelism = max_workers if self.devices is None else min(max_workers, len(self.devices))
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.asynchronous = asynchronous

    def backend(self, objective: Objective) -> Backend:
        return _ProcessBackend(objective, self.timeout_s, self.poll_s)


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
            return [(done, failed_payload(f"the Ray task failed: {_first_line(error)}", lost=lost))]

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
                env_vars = {"PYTHONPATH": _python_path(), **(runtime_env or {}).get("env_vars", {})}
                options["runtime_env"] = {**(runtime_env or {}), "env_vars": env_vars}
            if address not in (None, "auto"):
                _check_reachable(address)
            try:
                ray.init(address=address, **options)
            except (ConnectionError, TimeoutError, RuntimeError) as error:
                raise NASError(f"No Ray cluster could be reached at {address!r} ({_first_line(error)}); give a running cluster's address, or null for a local instance.") from None
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:500]


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
            return failed_payload(f"the {self.cluster} job {job.job_id} failed: {_first_line(error)}", lost=True)

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
                raise NASError(f"Invalid executor.parameters for submitit: {_first_line(error)}") from None

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
            raise NASError(f"Invalid executor.parameters for submitit: {_first_line(error)}") from None
        return executor, own_process

    def backend(self, objective: Objective) -> Backend:
        executor, own_process = self._executor(objective)
        return _SubmititBackend(executor, objective, own_process, self.cluster, self.poll_s)
