"""Costs of working with each search space: ``python -m nas.spaces.benchmark``.

Per space, prints the time to enumerate every member and compute its surrogate features,
the time to score all members with the default surrogate (a 6-member ensemble with a
64-128-128 trunk and 128-wide heads) in one batched pass, and the zero-cost
preprocessing time per 100 architectures (profiled on ``--zero-cost-samples`` of them,
after one untimed architecture, and extrapolated). For the ``attention`` space the
zero-cost time includes the width-coefficient calibration of each new design (in a fresh
cache directory unless ``--cache-dir`` is given).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from nas.errors import NASError
from nas.spaces import SPACES, build_space
from nas.surrogate import EnsembleSurrogate
from nas.costs.zero_cost import compute_zero_cost

T = TypeVar("T")


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def benchmark_space(
    name: str, resolution: int | None, zero_cost_samples: int, warmup: int, repetitions: int, cache_dir: str
) -> dict[str, float]:
    """Timings (seconds) of one space, at ``resolution`` or the space's own; see the module docstring."""
    kwargs: dict[str, object] = {} if resolution is None else {"resolution": resolution}
    if name == "attention":
        kwargs["cache_dir"] = cache_dir
    space, build_s = _timed(lambda: build_space(name, **kwargs))
    codes, enumerate_s = _timed(lambda: space.all_codes)
    features, features_s = _timed(lambda: space.features(codes))
    surrogate = EnsembleSurrogate(space, members=6, trunk=(64, 128, 128), head_hidden=128)
    surrogate.predict(codes[:1024], features=features[:1024])  # first-call allocations are not scoring
    cpu_start = time.process_time()
    score_s = statistics.median(_timed(lambda: surrogate.predict(codes, features=features))[1] for _ in range(3))
    score_cpu_s = (time.process_time() - cpu_start) / 3
    # One untimed architecture first: the first profile pays one-off library initialisation.
    compute_zero_cost(space, num_samples=1, seed=1, warmup=0, repetitions=1)
    _, zero_cost_s = _timed(
        lambda: compute_zero_cost(space, num_samples=zero_cost_samples, seed=0, warmup=warmup, repetitions=repetitions)
    )
    return {
        "size": float(codes.shape[0]),
        "features": float(features.shape[1]),
        "resolution": float(space.sample_input(1).shape[-1]),
        "enumerate_s": build_s + enumerate_s + features_s,
        "score_s": score_s,
        "score_cpu_s": score_cpu_s,
        "zero_cost_per_100_s": zero_cost_s / zero_cost_samples * 100,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--resolution", type=int, default=None, help="input side (default: each space's own)")
    parser.add_argument("--zero-cost-samples", type=int, default=5, help="architectures profiled (extrapolated to 100)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes per latency measurement")
    parser.add_argument("--repetitions", type=int, default=10, help="timed passes per latency measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--cache-dir", default=None, help="width-coefficient cache of the attention space")
    args = parser.parse_args(argv)
    if args.zero_cost_samples < 1:
        parser.error(f"--zero-cost-samples must be at least 1, got {args.zero_cost_samples}.")
    torch.set_num_threads(args.threads)
    print(
        f"threads={args.threads} resolution={args.resolution or 'per space'} zero-cost: {args.zero_cost_samples} architectures per "
        f"space after one untimed one, warmup={args.warmup}, repetitions={args.repetitions}, extrapolated to 100; "
        "scoring: median of 3 batched passes (cpu time: process CPU seconds per pass, all threads)"
    )
    header = (
        f"{'space':<20}{'input':>6}{'members':>10}{'features':>10}{'enumerate+featurise':>22}{'score all':>12}"
        f"{'(cpu time)':>12}{'zero-cost/100':>16}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.spaces:
            try:
                row = benchmark_space(
                    name, args.resolution, args.zero_cost_samples, args.warmup, args.repetitions, args.cache_dir or scratch
                )
            except NASError as exc:
                print(f"{name:<20}error: {exc}")
                continue
            note = "  (incl. width calibration)" if name == "attention" else ""
            print(
                f"{name:<20}{int(row['resolution']):>6}{int(row['size']):>10,}{int(row['features']):>10}{row['enumerate_s']:>21.3f}s"
                f"{row['score_s']:>11.3f}s{row['score_cpu_s']:>11.3f}s{row['zero_cost_per_100_s']:>15.1f}s{note}"
            )


if __name__ == "__main__":
    main()
