"""``python -m nas.benchmark``: strategies side by side, many seeds, on a benchmark.

What runs depends on the configuration (every harness lives in :mod:`nas.bench`):

- a lookup table, one objective (the default: NAS-Bench-201): :mod:`nas.bench.tabular`;
- ``objectives`` (fronts, or one objective with budgets): :mod:`nas.bench.multiobjective`;
- ``mode: multifidelity`` (``benchmark=nb201_mf``, ``benchmark=nb301``): :mod:`nas.bench.multifidelity`;
  with ``tasks=[…]`` (``benchmark=lcbench``) once per task, compared in normalised regret: :mod:`nas.bench.tasks`;
- ``mode: training`` (``benchmark=training``): real training on the embedded dataset, :mod:`nas.bench.training`;
- ``merge=[dir, ...]``: earlier results reported side by side.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from nas.bench.tabular import merge_benchmarks, run_tabular_benchmark
from nas.cli import quote_comparisons, user_errors


def run_benchmark(cfg: DictConfig) -> dict[str, list[Any]]:
    """Run the benchmark ``cfg`` describes (see the module docstring) and write its reports to ``cfg.output_dir``."""
    if cfg.get("objectives"):
        from nas.bench.multiobjective import run_front_benchmark

        return run_front_benchmark(cfg)  # type: ignore[return-value]
    if cfg.get("merge"):
        return merge_benchmarks(list(cfg.merge), Path(cfg.output_dir), cfg.get("readme"))  # type: ignore[return-value]
    if cfg.get("mode") == "training":
        from nas.bench.training import run_training_benchmark

        return run_training_benchmark(cfg)  # type: ignore[return-value]
    if cfg.get("mode") == "multifidelity" and cfg.get("tasks"):
        from nas.bench.tasks import run_task_benchmark

        return run_task_benchmark(cfg)  # type: ignore[return-value]
    if cfg.get("mode") == "multifidelity":
        from nas.bench.multifidelity import run_mf_benchmark

        return run_mf_benchmark(cfg)  # type: ignore[return-value]
    return run_tabular_benchmark(cfg)  # type: ignore[return-value]


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run_benchmark(cfg)


if __name__ == "__main__":
    sys.argv = quote_comparisons(sys.argv)
    main()
