"""``python -m nas.precompute``: the zero-cost data of a search space, written to one file.

``python -m nas.precompute searchspace=nb201 zero_cost=nb201_table output=zero_cost.safetensors``
computes (or completes, from the cache) every metric of the ``zero_cost`` config and
writes the code-free safetensors file that table searches and benchmarks read.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from nas.cli import configure_threads, user_errors
from nas.spaces import build_space
from nas.costs.zero_cost import finite_share, zero_cost_from_config


def precompute(cfg: DictConfig) -> Path:
    """Compute the configured zero-cost data and copy its file to ``cfg.output``."""
    configure_threads(cfg.threads)
    space = build_space(**cfg.searchspace)
    started = time.perf_counter()
    settings = cfg.zero_cost.copy()
    settings.file = None  # compute from scratch (or the cache), not from the shipped copy
    data, path = zero_cost_from_config(space, settings)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, output)
    defined = ", ".join(f"{m} {share:.1%}" for m, share in finite_share(data).items())
    print(f"{data.codes.shape[0]} architectures of {space.name} in {time.perf_counter() - started:.0f} s; defined: {defined}")
    print(f"Written to {output.resolve()}")
    return output


@hydra.main(version_base="1.3", config_path="../configs", config_name="precompute")
def main(cfg: DictConfig) -> None:
    with user_errors():
        precompute(cfg)


if __name__ == "__main__":
    main()
