"""``python -m nas.cost_table searchspace=nb201 output=costs.csv``: the FLOPs and parameters of
every member of a space, written as a cost table (see :mod:`nas.costs.flops`)."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nas.cli import configure_threads, user_errors
from nas.costs.flops import write_cost_table
from nas.paths import resolve_path
from nas.spaces import build_space


@hydra.main(version_base="1.3", config_path="../configs", config_name="cost_table")
def main(cfg: DictConfig) -> None:
    with user_errors("the table is written once every network is counted, so nothing was written; run the same command again"):
        configure_threads(cfg.threads)
        write_cost_table(build_space(**cfg.searchspace), resolve_path(cfg.output))


if __name__ == "__main__":
    main()
