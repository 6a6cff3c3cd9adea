"""``python -m nas.worker OBJECTIVE TRIAL RESULT``: one evaluation in a process of its own;
``python -m nas.worker --serve OBJECTIVE``: one evaluation per ``TRIAL<tab>RESULT`` line read
from stdin, one after another in this process, until stdin closes.

Started by :mod:`nas.executors`. ``OBJECTIVE`` is an objective the search pickled and
signed (:func:`~nas.executors.dump_objective`; the key comes in the environment), ``TRIAL``
a JSON ``{"encoding": [...], "fidelity": "hi"}`` (with the trial's ``stop_rule`` when it has one); the payload (see :mod:`nas.executors`) is written
to ``RESULT`` by global rank 0 alone. When the objective trains with Lightning's ``ddp``
strategy, Lightning starts this same command again for every other rank; those copies
evaluate the same trial in step and write nothing.
"""
from __future__ import annotations

# Only light modules before _end_with_parent(): the heavy imports (torch) take seconds,
# during which a search killed with -9 would leave this process running.
import json
import os
import sys
from pathlib import Path

from nas.lifecycle import end_with_parent

#: Set by the search to its own pid, so a worker can tell that it was orphaned before it
#: asked to be killed with its parent.
PARENT_PID_ENV = "NAS_SEARCH_PID"
#: The search's torch thread count, which the worker adopts.
THREADS_ENV = "NAS_TORCH_THREADS"


def _end_with_parent() -> None:
    """Ask Linux to kill this process when the process that started it dies (even by ``kill -9``).

    The search's worker checks that its parent is still the search. The copies Lightning
    starts for the other DDP ranks (``LOCAL_RANK`` set) end with the rank-0 worker instead.
    """
    expected = os.environ.get(PARENT_PID_ENV) if "LOCAL_RANK" not in os.environ else None
    end_with_parent(int(expected) if expected else None)


def _global_rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0)) or int(os.environ.get("LOCAL_RANK", 0))


def _evaluate_to(objective: object, trial_file: Path, result_file: Path) -> None:
    from nas.executors import evaluate_here
    from nas.executors.payload import trial_from_json

    payload = evaluate_here(objective, trial_from_json(json.loads(trial_file.read_text())))  # type: ignore[arg-type]
    if _global_rank() == 0:
        partial = result_file.with_suffix(".partial")
        partial.write_text(json.dumps(payload))
        partial.replace(result_file)  # whole or absent: the search never reads half a result


def main(argv: list[str] | None = None) -> int:
    arguments = argv or sys.argv[1:]
    _end_with_parent()
    import torch

    from nas.executors import OBJECTIVE_KEY_ENV, load_objective
    from nas.executors.process import SERVE_FLAG

    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    serve = arguments[0] == SERVE_FLAG
    objective = load_objective(Path(arguments[1 if serve else 0]), os.environ.get(OBJECTIVE_KEY_ENV, ""))
    if not serve:
        _evaluate_to(objective, Path(arguments[1]), Path(arguments[2]))
        return 0
    for line in sys.stdin:
        trial_file, result_file = line.rstrip("\n").split("\t")
        _evaluate_to(objective, Path(trial_file), Path(result_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
