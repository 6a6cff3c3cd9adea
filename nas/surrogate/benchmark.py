"""``python -m nas.surrogate.benchmark``: time of one BO iteration on NAS-Bench-201 (or,
with ``--space nb301``, on NAS-Bench-301, whose space cannot be enumerated).

One iteration = continued training of the ensemble on the observations (its configured
``fit_epochs`` and ``max_fit_steps``, with the zero-cost auxiliary task when the config
has one) + scoring all 15,625 architectures + choosing a batch by acquisition. The
ensemble is first pretrained on the zero-cost data shipped for NAS-Bench-201, as in a
search. Observations are real table values of distinct random architectures. Prints the
median and spread over repeated iterations, for each ensemble config and thread count.

On NAS-Bench-301 an iteration is one ``ask`` of the benchmark's mono-fidelity BO (no
pretraining): the fit, a candidate pool of ``pool_size`` sampled and mutated architectures
(vectorised), its scoring and the acquisition; observations are the surrogate's values.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from nas.acquisition import select_batch
from nas.objectives.table import TableObjective
from nas.paths import resolve_path
from nas.spaces.nb201 import NB201Space
from nas.costs.zero_cost import ZeroCostData

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def time_iterations(ensemble: str, observations: int, iterations: int, threads: int) -> list[float]:
    """Seconds of each of ``iterations`` BO iterations with ``observations`` data points
    (the default BO's batch size and acquisition)."""
    torch.set_num_threads(threads)
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("config", overrides=[f"ensemble={ensemble}"])
    space = NB201Space()
    table = TableObjective(space, "package://nb201/cifar10.csv", "test_acc")
    generator = torch.Generator().manual_seed(0)
    rows = torch.randperm(space.size, generator=generator)[:observations]
    codes, values = space.all_codes[rows], table.values[rows]
    surrogate = instantiate(cfg.ensemble)(space=space, seed=0, pretraining="simultaneous")
    surrogate.pretrain(ZeroCostData.load(resolve_path("package://nb201/zero_cost.safetensors"), space))
    features = space.features(space.all_codes)
    excluded = torch.zeros(space.size, dtype=torch.bool)
    excluded[rows] = True
    surrogate.fit(codes, values)  # first fit builds the optimiser state; not what an iteration costs
    timings = []
    for _ in range(iterations):
        started = time.perf_counter()
        surrogate.fit(codes, values)
        samples = surrogate.predict(space.all_codes, features=features)
        incumbent = float(surrogate.normalise(values.max().unsqueeze(0))[0])
        select_batch(samples, incumbent, cfg.strategy.batch_size, excluded, cfg.strategy.acquisition)
        timings.append(time.perf_counter() - started)
    return timings


def time_nb301_iterations(ensemble: str, observations: int, iterations: int, threads: int, pool_size: int, batch_size: int = 5) -> list[float]:
    """Seconds of each of ``iterations`` asks of BO on ``nb301`` from ``observations`` data points on."""
    from nas.objectives.surrogate_benchmark import SurrogateBenchmarkObjective
    from nas.spaces.nb301 import NB301Space
    from nas.strategies import BayesianOptimization

    torch.set_num_threads(threads)
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("config", overrides=[f"ensemble={ensemble}"])
    space = NB301Space()
    objective = SurrogateBenchmarkObjective(space)
    strategy = BayesianOptimization(space, instantiate(cfg.ensemble), pretraining="none", acquisition="pi", batch_size=batch_size, initial_points=batch_size, pool_size=pool_size)
    codes = space.sample(observations, torch.Generator().manual_seed(0))
    strategy.tell([tuple(row) for row in codes.tolist()], objective.accuracy(codes).tolist())
    timings = []
    for _ in range(iterations):
        started = time.perf_counter()
        picks = strategy.ask(batch_size)
        timings.append(time.perf_counter() - started)
        strategy.tell(picks, objective.accuracy(torch.tensor(picks)).tolist())
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensembles", nargs="+", default=["default", "thesis"], help="configs/ensemble names")
    parser.add_argument("--observations", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--space", choices=["nb201", "nb301"], default="nb201")
    parser.add_argument("--pool-size", type=int, default=10_000, help="nb301: candidates scored per iteration")
    args = parser.parse_args()
    what = "NAS-Bench-201 (15,625 architectures)" if args.space == "nb201" else f"NAS-Bench-301 (pool of {args.pool_size:,} candidates)"
    print(f"one BO iteration on {what}, {args.observations} observations, load average {os.getloadavg()[0]:.2f}")
    print(f"{'ensemble':10} {'threads':>7} {'median s':>9} {'min s':>7} {'max s':>7}")
    for ensemble in args.ensembles:
        for threads in args.threads:
            if args.space == "nb301":
                t = time_nb301_iterations(ensemble, args.observations, args.iterations, threads, args.pool_size)
            else:
                t = time_iterations(ensemble, args.observations, args.iterations, threads)
            print(f"{ensemble:10} {threads:7d} {statistics.median(t):9.3f} {min(t):7.3f} {max(t):7.3f}")


if __name__ == "__main__":
    main()
