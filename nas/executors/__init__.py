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

Modules: :mod:`~nas.executors.payload` (what travels), :mod:`~nas.executors.pool` (the
executor interface and the pool every engine shares), one module per engine
(:mod:`~nas.executors.local`, :mod:`~nas.executors.process`, :mod:`~nas.executors.ray`,
:mod:`~nas.executors.slurm`). Layer: the search's; imports objectives and trials, never the
search loop's callers (see ARCHITECTURE.md).
"""
from nas.executors.local import LocalExecutor
from nas.executors.payload import (
    LOST,
    OBJECTIVE_KEY_ENV,
    Finished,
    Payload,
    dump_objective,
    evaluate_here,
    evaluate_safely,
    failed_payload,
    load_objective,
    needs_own_process,
    planned_cost,
    result_of,
)
from nas.executors.pool import (
    VISIBLE_DEVICES_ENV,
    Arrival,
    Backend,
    Executor,
    Pool,
    check_retries,
    device_groups,
)
from nas.executors.process import ProcessExecutor, WorkerProcess, evaluate_payload
from nas.executors.ray import RayExecutor, evaluate_in_ray_worker
from nas.executors.slurm import SlurmExecutor

__all__ = [
    "LOST", "OBJECTIVE_KEY_ENV", "VISIBLE_DEVICES_ENV", "Arrival", "Backend", "Executor", "Finished", "LocalExecutor", "Payload", "Pool",
    "ProcessExecutor", "RayExecutor", "SlurmExecutor", "WorkerProcess", "check_retries", "device_groups", "dump_objective", "evaluate_here",
    "evaluate_in_ray_worker", "evaluate_payload", "evaluate_safely", "failed_payload", "load_objective", "needs_own_process", "planned_cost", "result_of",
]
