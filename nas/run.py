"""``python -m nas.run``: one architecture search composed by Hydra.

Config groups: ``searchspace``, ``objective``, ``strategy``, ``ensemble``, ``zero_cost``.
Example: ``python -m nas.run searchspace=nb201 objective=table strategy=bo budget=100``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from nas.cli import configure_threads, user_errors
from nas.search import SearchHistory, run_search
from nas.space import SearchSpace
from nas.spaces import build_space
from nas.strategies import Strategy, instantiate_strategy
from nas.zero_cost import load_or_compute_zero_cost

log = logging.getLogger(__name__)


def _summary(space: SearchSpace, history: SearchHistory) -> dict[str, object]:
    ok = [(e.value, enc) for enc, e in zip(history.encodings, history.evaluations) if e.status == "ok"]
    best_value, best = max(ok) if ok else (float("nan"), None)
    return {
        "best_architecture": space.to_string(best) if best is not None else None,
        "best_encoding": list(best) if best is not None else None,
        "best_value": best_value,
        "evaluations": len(history.evaluations),
        "failed": sum(e.status != "ok" for e in history.evaluations),
        "cost": history.cost,
    }


def run(cfg: DictConfig) -> dict[str, object]:
    """Run the configured search and write ``summary.json`` in ``cfg.output_dir``."""
    configure_threads(cfg.threads)
    space = build_space(**cfg.searchspace)
    objective = hydra.utils.instantiate(cfg.objective, space=space)
    zero_cost = None
    if cfg.strategy.get("pretraining", "none") != "none":
        zc = cfg.zero_cost
        zero_cost = load_or_compute_zero_cost(space, Path(zc.cache_dir), zc.num_samples, zc.seed, warmup=zc.warmup, repetitions=zc.repetitions)
    strategy: Strategy = instantiate_strategy(cfg.strategy, space, cfg.seed, zero_cost)

    def on_batch(history: SearchHistory) -> None:
        best = history.best_so_far()[-1]
        log.info("%d evaluations, best %.4f", len(history.evaluations), best)

    history = run_search(strategy, objective, cfg.budget, on_batch=on_batch)
    summary = _summary(space, history)
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.json").write_text(json.dumps({**summary, "config": OmegaConf.to_container(cfg, resolve=True)}, indent=1))
    print(f"Best architecture: {summary['best_architecture']}")
    print(f"Best value: {summary['best_value']} after {summary['evaluations']} evaluations (cost {summary['cost']:g})")
    return summary


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
