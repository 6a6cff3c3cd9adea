"""``python -m nas.async_benchmark``: what asynchronous parallel search gains on NAS-Bench-201.

Candidates differ in training time, so a batch barrier leaves workers idle. On the
NAS-Bench-201 table, each evaluation here takes a simulated time proportional to the
cell's convolution FLOPs (:func:`cell_flops`): from ``min_ms`` for a cell without
convolutions to 10x that for six 3x3 convolutions.

1. *Wall time* (real): random search for ``budget`` evaluations on a local Ray instance
   with 1, 2 and 4 workers, each evaluation sleeping its simulated time (sleeps, not
   computation, so that 2 CPU cores suffice for 4 workers), asynchronously and with a
   batch barrier, with the speed-up over 1 worker.
2. *Evaluations to the optimum* (simulated): Bayesian optimisation with ``workers``
   asynchronous workers against sequential BO (one worker, one suggestion per
   evaluation), over ``seeds`` seeds. No sleeps: :class:`SimulatedExecutor` runs each
   evaluation at once and returns the results in the order of a virtual clock on which
   each evaluation lasts its simulated time; the search sees exactly the completion order
   of real workers (a free worker gets the next suggestion, made while the others still
   run, their trials pending).

Example: ``python -m nas.async_benchmark --budget 200 --seeds 20``.
"""
from __future__ import annotations

import argparse
import heapq
import math
import statistics
import time
from typing import Callable, Hashable

from nas.errors import NASError
from nas.executors import Backend, Executor, Payload, evaluate_here
from nas.objectives import TableObjective
from nas.objectives.base import Evaluation, Objective
from nas.search import run_search
from nas.space import Encoding
from nas.spaces import build_space
from nas.spaces.nb201 import NB201Space
from nas.strategies.base import Strategy, Trial

#: Relative FLOPs of one NAS-Bench-201 edge operation (a 3x3 convolution costs 9 times a 1x1).
_OP_FLOPS = {"none": 0.0, "skip_connect": 0.0, "avg_pool_3x3": 0.0, "nor_conv_1x1": 1.0, "nor_conv_3x3": 9.0}


def cell_flops(space: NB201Space, encoding: Encoding) -> float:
    """The cell's convolution FLOPs relative to its maximum (six 3x3 convolutions): 0 to 1."""
    flops = sum(_OP_FLOPS[choices[code]] for choices, code in zip(space.choices, encoding))
    return flops / (_OP_FLOPS["nor_conv_3x3"] * len(encoding))


def simulated_seconds(space: NB201Space, min_ms: float) -> Callable[[Trial], float]:
    """Evaluation time of a trial: ``min_ms`` times (1 + 9 x relative FLOPs), a 10x range."""
    return lambda trial: min_ms / 1000 * (1 + 9 * cell_flops(space, trial.encoding))


class SleepingObjective:
    """The table's value after sleeping the simulated evaluation time."""

    def __init__(self, table: TableObjective, seconds: Callable[[Trial], float]) -> None:
        self.table = table
        self.seconds = seconds

    def evaluate(self, encoding: Encoding, fidelity: str = "hi") -> Evaluation:
        time.sleep(self.seconds(Trial(tuple(encoding), fidelity)))
        return self.table.evaluate(encoding, fidelity)


class _VirtualClockBackend(Backend):
    def __init__(self, objective: Objective, seconds: Callable[[Trial], float]) -> None:
        self.objective, self.seconds = objective, seconds
        self.now = 0.0
        self._events: list[tuple[float, int, Payload]] = []  # (virtual end, launch number, payload)
        self._launched = 0

    def launch(self, trial: Trial, devices: tuple[str, ...] | None) -> Hashable:
        self._launched += 1
        payload = evaluate_here(self.objective, trial)
        heapq.heappush(self._events, (self.now + self.seconds(trial), self._launched, payload))
        return self._launched

    def wait_any(self, running: list[Hashable]) -> list[tuple[Hashable, Payload]]:
        end, handle, payload = heapq.heappop(self._events)
        self.now = end
        return [(handle, payload)]


class SimulatedExecutor(Executor):
    """``workers`` simulated workers on a virtual clock: deterministic asynchronous completion order.

    Each evaluation runs at once in this process; it finishes, on the virtual clock
    ``now``, ``seconds(trial)`` after it started. Results come back in virtual-time order
    (ties: launch order), as they would from real workers.
    """

    def __init__(self, workers: int, seconds: Callable[[Trial], float], asynchronous: bool = True) -> None:
        if workers < 1:
            raise NASError(f"The number of simulated workers must be positive, got {workers}.")
        self.parallelism = workers
        self.seconds = seconds
        self.asynchronous = asynchronous
        self.last_backend: _VirtualClockBackend | None = None

    def backend(self, objective: Objective) -> Backend:
        self.last_backend = _VirtualClockBackend(objective, self.seconds)
        return self.last_backend


def evaluations_to_optimum(values: list[float], optimum: float) -> int | None:
    """1-based index of the first evaluation that reached ``optimum``, or ``None``."""
    return next((i + 1 for i, v in enumerate(values) if v >= optimum), None)


#: A small ensemble for many seeds on few cores (``--ensemble small``).
SMALL_ENSEMBLE = {"members": 3, "trunk": (32, 32), "head_hidden": 32, "fit_epochs": 5, "batch_size": 32}


def make_strategy(name: str, space: NB201Space, seed: int, ensemble: str = "default") -> Strategy:
    """``bo``: the configured BO (``ensemble=default``, or :data:`SMALL_ENSEMBLE`), without
    pretraining, one suggestion per ask; ``evolution``: regularized evolution."""
    from functools import partial

    from nas.strategies import BayesianOptimization, RegularizedEvolution
    from nas.surrogate import EnsembleSurrogate

    if name == "evolution":
        return RegularizedEvolution(space, seed=seed)
    surrogate = partial(EnsembleSurrogate, **SMALL_ENSEMBLE) if ensemble == "small" else EnsembleSurrogate
    return BayesianOptimization(space, surrogate, seed=seed, pretraining="none", batch_size=1, initial_points=10)


def wall_time_rows(table: TableObjective, space: NB201Space, budget: int, workers: list[int], min_ms: float) -> list[tuple[str, int, float]]:
    """Seconds of a random search of ``budget`` evaluations per schedule and number of workers.

    One local Ray instance serves every run, its worker processes started by a warm-up
    search first: their start (an interpreter, torch, this package) is paid once per
    cluster, not per search, and is no part of what is compared.
    """
    from nas.executors import RayExecutor
    from nas.strategies import RandomSearch

    objective = SleepingObjective(table, simulated_seconds(space, min_ms))
    rows = []
    with RayExecutor(num_cpus=max(workers)) as cluster:
        run_search(RandomSearch(space, seed=-1), SleepingObjective(table, lambda trial: 0.05), 4 * max(workers), executor=cluster)
        for asynchronous in (True, False):
            for count in workers:
                if not asynchronous and count == 1:
                    continue  # one worker: the same schedule
                executor = RayExecutor(max_concurrent=count, asynchronous=asynchronous)  # joins the running instance
                started = time.perf_counter()
                history = run_search(RandomSearch(space, seed=0), objective, budget, executor=executor)
                seconds = time.perf_counter() - started
                assert len(history.evaluations) == budget
                rows.append(("asynchronous" if asynchronous else "batch barrier", count, seconds))
                print(f"  {rows[-1][0]:14s} {count} worker(s): {seconds:7.2f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="package://nb201/cifar10.csv")
    parser.add_argument("--column", default="test_acc")
    parser.add_argument("--budget", type=int, default=200, help="evaluations of each wall-time search")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--min-ms", type=float, default=20.0, help="simulated time of the cheapest cell (the costliest takes 10x)")
    parser.add_argument("--seeds", type=int, default=20, help="seeds of the evaluations-to-optimum comparison (0: skip it)")
    parser.add_argument("--async-workers", type=int, default=4)
    parser.add_argument("--search-budget", type=int, default=300, help="evaluations of each BO search (a seed that misses the optimum counts as not reaching it)")
    parser.add_argument("--strategy", choices=("bo", "evolution"), default="bo", help="the strategy of the evaluations-to-optimum comparison")
    parser.add_argument("--ensemble", choices=("default", "small"), default="default", help="BO's ensemble: the configured one, or a small one for many seeds on few cores")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--skip-wall-time", action="store_true")
    args = parser.parse_args(argv)

    from nas.cli import configure_threads

    configure_threads(1)
    space = build_space("nb201")
    assert isinstance(space, NB201Space)
    table = TableObjective(space, args.table, args.column)
    if not args.skip_wall_time:
        print(f"Wall time of random search, budget {args.budget}, evaluation time {args.min_ms:g}-{10 * args.min_ms:g} ms (proportional to cell FLOPs), local Ray instance:")
        rows = wall_time_rows(table, space, args.budget, args.workers, args.min_ms)
        single = next(s for mode, count, s in rows if count == 1)
        print("Speed-up over 1 worker:")
        for mode, count, seconds in rows:
            print(f"  {mode:14s} {count} worker(s): {seconds:7.2f} s   speed-up {single / seconds:4.2f}x")
    if args.seeds > 0:
        optimum = max(table.evaluate(tuple(code), "hi").value for code in space.all_codes.tolist())
        seconds = simulated_seconds(space, args.min_ms)
        print(f"Evaluations to the table optimum ({optimum:.4f}), {args.strategy} ({args.ensemble} ensemble), seeds {args.first_seed}-{args.first_seed + args.seeds - 1}, budget {args.search_budget}, simulated completion order:")
        for label, workers in (("sequential (1 worker)", 1), (f"asynchronous ({args.async_workers} workers)", args.async_workers)):
            counts: list[int] = []
            missed = 0
            started = time.perf_counter()
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                strategy = make_strategy(args.strategy, space, seed, args.ensemble)
                history = run_search(strategy, table, args.search_budget, executor=SimulatedExecutor(workers, seconds))
                found = evaluations_to_optimum([e.value for e in history.evaluations], optimum)
                if found is None:
                    missed += 1
                else:
                    counts.append(found)
            mean = statistics.mean(counts) if counts else math.nan
            std = statistics.stdev(counts) if len(counts) > 1 else 0.0
            print(f"  {label:26s} per seed {[c if c is not None else None for c in counts]}", flush=True)
            print(f"  {label:26s} mean {mean:6.1f}  std {std:5.1f}  min {min(counts, default=0)}  max {max(counts, default=0)}  missed {missed}/{args.seeds}   ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
