"""``python -m nas.surrogate.benchmark``: time of one BO iteration on NAS-Bench-201.

One iteration = continued training of the ensemble on the observations (its configured
``fit_epochs`` and ``max_fit_steps``, with the zero-cost auxiliary task when the config
has one) + scoring all 15,625 architectures + choosing a batch by acquisition. The
ensemble is first pretrained on the zero-cost data shipped for NAS-Bench-201, as in a
search. Observations are real table values of distinct random architectures. Prints the
median and spread over repeated iterations, for each ensemble config and thread count.
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
from nas.zero_cost import ZeroCostData

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensembles", nargs="+", default=["default", "thesis"], help="configs/ensemble names")
    parser.add_argument("--observations", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    args = parser.parse_args()
    print(f"one BO iteration on NAS-Bench-201 (15,625 architectures), {args.observations} observations, load average {os.getloadavg()[0]:.2f}")
    print(f"{'ensemble':10} {'threads':>7} {'median s':>9} {'min s':>7} {'max s':>7}")
    for ensemble in args.ensembles:
        for threads in args.threads:
            t = time_iterations(ensemble, args.observations, args.iterations, threads)
            print(f"{ensemble:10} {threads:7d} {statistics.median(t):9.3f} {min(t):7.3f} {max(t):7.3f}")


if __name__ == "__main__":
    main()
