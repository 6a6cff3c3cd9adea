"""The process executor: each evaluation in a fresh ``python -m nas.worker`` process, or in
worker processes that serve one trial after another (``reuse_workers``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Sequence

import torch

from nas.errors import NASError
from nas.executors.payload import (
    OBJECTIVE_KEY_ENV,
    Payload,
    dump_objective,
    evaluate_here,
    failed_payload,
    needs_own_process,
    trial_to_json,
)
from nas.executors.pool import (
    VISIBLE_DEVICES_ENV,
    Backend,
    Executor,
    check_retries,
    device_groups,
)
from nas.lifecycle import owned_temporary_directory
from nas.objectives.base import Objective
from nas.strategies.base import Trial

#: The first argument of ``python -m nas.worker`` for a worker that serves many trials
#: (:class:`ServingWorker`).
SERVE_FLAG = "--serve"
#: Variables that tell a process its place in a distributed job. A worker inherits the
#: search's environment without them, so that it does not mistake itself for a rank of a
#: job the search itself may be running in.
_DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


def evaluate_payload(objective: Objective, trial: Trial, own_process: bool) -> Payload:
    """Evaluate here, or in a ``python -m nas.worker`` child when ``own_process`` (what remote tasks run)."""
    if not own_process:
        return evaluate_here(objective, trial)
    with owned_temporary_directory("nas-worker-") as folder:
        objective_file = Path(folder) / "objective.pkl"
        key = dump_objective(objective, objective_file)
        child = WorkerProcess.start(objective_file, key, trial, Path(folder) / "job")
        child.process.wait()
        return child.collect()



def python_path() -> str:
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


def _write_trial(trial: Trial, stem: Path) -> tuple[Path, Path, Path]:
    """Write ``trial`` beside ``stem``; return its trial, result and log file paths."""
    trial_file, result_file, log_file = stem.with_suffix(".trial.json"), stem.with_suffix(".result.json"), stem.with_suffix(".log")
    trial_file.write_text(json.dumps(trial_to_json(trial)))
    return trial_file, result_file, log_file


def _start_worker(arguments: list[str], key: str, log_file: Path, devices: tuple[str, ...] | None, serve: bool = False) -> subprocess.Popen:
    """``python -m nas.worker ARGUMENTS`` in a new session (so that a kill reaches its DDP ranks
    too), logging to ``log_file``; ``serve``: with a pipe on its stdin for the trials to come."""
    env = {name: value for name, value in os.environ.items() if name not in _DISTRIBUTED_ENV}
    # The worker imports what this process imports (the objective may live in a module
    # that is importable here only through sys.path, e.g. a test's).
    env["PYTHONPATH"] = python_path()
    env["NAS_SEARCH_PID"] = str(os.getpid())  # nas.worker.PARENT_PID_ENV
    env[OBJECTIVE_KEY_ENV] = key
    # The search's thread setting (config `threads`), which torch would not inherit:
    # workers sharing the cores with all threads each slow every step.
    env["NAS_TORCH_THREADS"] = str(torch.get_num_threads())  # nas.worker.THREADS_ENV
    if devices is not None:
        env[VISIBLE_DEVICES_ENV] = ",".join(devices)
    with log_file.open("w") as log_handle:
        return subprocess.Popen(
            [sys.executable, "-m", "nas.worker", *arguments],
            stdin=subprocess.PIPE if serve else subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _kill_session(process: subprocess.Popen) -> None:
    """Kill a worker and every process of its session (its DDP ranks)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


@dataclass(eq=False)  # hashed by identity: a handle in the pool
class WorkerProcess:
    """One running ``python -m nas.worker``: a new session, so that a kill reaches its DDP ranks too."""

    process: subprocess.Popen
    result_file: Path
    log_file: Path
    started: float

    #: Whether the process goes on after this evaluation (a :class:`ServingWorker`'s).
    served: bool = False

    @classmethod
    def start(cls, objective_file: Path, key: str, trial: Trial, stem: Path, devices: tuple[str, ...] | None = None) -> "WorkerProcess":
        """Start a worker for ``trial``; ``devices``: the GPU ids it may see (``None``: the search's)."""
        trial_file, result_file, log_file = _write_trial(trial, stem)
        process = _start_worker([str(objective_file), str(trial_file), str(result_file)], key, log_file, devices)
        return cls(process, result_file, log_file, time.perf_counter())

    def finished(self) -> bool:
        """Whether the evaluation is over: its result written (a serving worker then waits for
        the next trial) or the process ended (with or without a result)."""
        return (self.served and self.result_file.exists()) or self.process.poll() is not None

    def kill(self) -> None:
        _kill_session(self.process)

    def collect(self) -> Payload:
        """The payload the worker wrote, or a failed one saying how the worker ended."""
        if self.result_file.exists():
            return json.loads(self.result_file.read_text())
        detail = _last_line(self.log_file)
        reason = f"the worker process {_describe_exit(self.process.returncode)}" + (f": {detail}" if detail else "")
        return failed_payload(reason, time.perf_counter() - self.started, lost=True)


@dataclass(eq=False)
class ServingWorker:
    """A ``python -m nas.worker --serve`` process: it starts and imports once, loads the
    objective once, then evaluates one trial per line written to its stdin, one at a time,
    until its stdin closes. Each evaluation is a :class:`WorkerProcess` handle on it."""

    process: subprocess.Popen
    log_file: Path
    devices: tuple[str, ...] | None

    @classmethod
    def start(cls, objective_file: Path, key: str, log_file: Path, devices: tuple[str, ...] | None = None) -> "ServingWorker":
        return cls(_start_worker([SERVE_FLAG, str(objective_file)], key, log_file, devices, serve=True), log_file, devices)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def submit(self, trial: Trial, stem: Path) -> WorkerProcess:
        """Hand ``trial`` to this worker (it must be idle); return the evaluation's handle."""
        trial_file, result_file, _ = _write_trial(trial, stem)
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(f"{trial_file}\t{result_file}\n".encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died since it was last seen alive: the handle reports it as lost
        return WorkerProcess(self.process, result_file, self.log_file, time.perf_counter(), served=True)

    def stop(self, grace_s: float = 5.0) -> None:
        """Close its stdin, so that it ends after its current trial; kill it after ``grace_s``."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=grace_s)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            _kill_session(self.process)


class _ProcessBackend(Backend):
    def __init__(self, objective: Objective, timeout_s: float | None, poll_s: float, reuse: bool) -> None:
        self._folder = owned_temporary_directory("nas-workers-")
        self.objective_file = Path(self._folder.name) / "objective.pkl"
        self.key = dump_objective(objective, self.objective_file)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        # A trainer that starts the worker's command again for each DDP rank needs a fresh command per trial.
        self.reuse = reuse and not needs_own_process(objective)
        self._launched = 0
        self._servers = 0
        self._idle: list[ServingWorker] = []
        self._busy: dict[WorkerProcess, ServingWorker] = {}

    def launch(self, trial: Trial, devices: tuple[str, ...] | None) -> Hashable:
        self._launched += 1
        stem = Path(self._folder.name) / f"job{self._launched}"
        if not self.reuse:
            return WorkerProcess.start(self.objective_file, self.key, trial, stem, devices)
        server = next((s for s in self._idle if s.devices == devices and s.alive), None)
        if server is None:
            self._servers += 1
            server = ServingWorker.start(self.objective_file, self.key, Path(self._folder.name) / f"worker{self._servers}.log", devices)
        else:
            self._idle.remove(server)
        job = server.submit(trial, stem)
        self._busy[job] = server
        return job

    def _release(self, job: WorkerProcess) -> None:
        server = self._busy.pop(job, None)
        if server is not None and server.alive:
            self._idle.append(server)

    def wait_any(self, running: list[Hashable]) -> list[tuple[Hashable, Payload]]:
        while True:
            finished = []
            for child in running:
                assert isinstance(child, WorkerProcess)
                if child.finished():
                    finished.append((child, child.collect()))
                    self._release(child)
                elif self.timeout_s is not None and time.perf_counter() - child.started >= self.timeout_s:
                    self.abandon(child)
                    reason = f"the worker process ran longer than the executor's limit of {self.timeout_s:g} s and was killed"
                    finished.append((child, failed_payload(reason, time.perf_counter() - child.started)))
            if finished:
                return finished
            time.sleep(self.poll_s)

    def abandon(self, handle: Hashable) -> None:
        assert isinstance(handle, WorkerProcess)
        handle.kill()
        self._busy.pop(handle, None)  # a killed serving worker is not used again

    def close(self) -> None:
        try:
            for server in [*self._idle, *self._busy.values()]:
                server.stop()
            self._idle.clear()
            self._busy.clear()
        finally:
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
        reuse_workers: keep each worker process for the next evaluations instead
            (:class:`ServingWorker`): the start and imports are paid once per worker, but a
            candidate that leaks memory or corrupts its interpreter's state affects those
            after it in the same process. Ignored for an objective that trains on several
            processes (a DDP trainer), which needs a fresh command per trial.
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
        reuse_workers: bool = False,
    ) -> None:
        if max_workers < 1:
            raise NASError(f"executor.max_workers must be a positive number of processes, got {max_workers}.")
        if timeout_s is not None and not timeout_s > 0:
            raise NASError(f"executor.timeout_s must be a positive number of seconds or null, got {timeout_s}.")
        self.retries = check_retries(retries)
        self.devices = device_groups(devices, gpus_per_trial)
        self.parallelism = max_workers if self.devices is None else min(max_workers, len(self.devices))
        self.reuse_workers = reuse_workers
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.asynchronous = asynchronous

    def backend(self, objective: Objective) -> Backend:
        return _ProcessBackend(objective, self.timeout_s, self.poll_s, self.reuse_workers)


