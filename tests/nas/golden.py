"""Golden traces: what the search does, bit for bit, in each mode of the product.

The proposals and values of a few seeds of every benchmark mode (tabular, multi-fidelity,
fronts, asynchronous on the virtual clock) and of one real training search on the
embedded data, through the public entry points. ``tests/nas/test_golden.py`` checks that
they are unchanged: a refactoring must leave them identical. A change of behaviour that is
meant rewrites them, stated in its commit:

    python -m tests.nas.golden --write
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "data" / "golden_traces.json"
FAST_ENSEMBLE = ["ensemble.trunk=[32,32]", "ensemble.head_hidden=32", "ensemble.fit_epochs=3", "ensemble.members=3", "ensemble.pretrain_epochs=3"]
TABLE = "package://nb201/cifar10.csv"


def _config(name: str, *overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def _trace(space: Any, trials: list[Any], evaluations: list[Any]) -> list[list[Any]]:
    """``[architecture, fidelity, value]`` per evaluation; values as ``repr`` (bit for bit)."""
    return [[space.to_string(t.encoding), t.fidelity, repr(float(e.value))] for t, e in zip(trials, evaluations)]


def tabular() -> dict[str, Any]:
    from nas.objectives.table import TableObjective
    from nas.search import run_search
    from nas.spaces import build_space
    from nas.strategies import instantiate_strategy
    from nas.costs.zero_cost import zero_cost_from_config

    cfg = _config("benchmark", *FAST_ENSEMBLE)
    space = build_space(**cfg.searchspace)
    table = TableObjective(space, TABLE, "test_acc")
    zero_cost = zero_cost_from_config(space, cfg.zero_cost)[0]
    out = {}
    for name in ("bo", "bo_no_pretraining", "random", "evolution", "local_search"):
        for seed in (0, 1):
            history = run_search(instantiate_strategy(cfg.strategies[name], space, seed, zero_cost), table, budget=25)
            out[f"{name}/{seed}"] = _trace(space, history.trials, history.evaluations)
    return out


def multi_fidelity() -> dict[str, Any]:
    from nas.objectives.table import TableObjective
    from nas.search import run_search
    from nas.spaces import build_space
    from nas.strategies import instantiate_strategy
    from nas.costs.zero_cost import zero_cost_from_config

    cfg = _config("benchmark", "benchmark=nb201_mf", *FAST_ENSEMBLE)
    space = build_space(**cfg.searchspace)
    objective = TableObjective(space, TABLE, "test_acc", low_table="package://nb201/cifar10_12ep.csv", low_fidelity_column="test_acc_12ep", low_fidelity_cost=0.06, low_fidelity_epochs=12)
    zero_cost = zero_cost_from_config(space, cfg.zero_cost)[0]
    out = {}
    for name in ("bo_multifidelity", "successive_halving"):
        for seed in (0, 1):
            history = run_search(instantiate_strategy(cfg.strategies[name], space, seed, zero_cost), objective, budget=3)
            out[f"{name}/{seed}"] = _trace(space, history.trials, history.evaluations)
    return out


def fronts() -> dict[str, Any]:
    from nas.costs.columns import load_columns
    from nas.acquisition.goals import Goals
    from nas.spaces import build_space
    from nas.strategies.multiobjective import KnownCosts, instantiate_front_strategy
    from nas.costs.zero_cost import zero_cost_from_config

    cfg = _config("benchmark", *FAST_ENSEMBLE)
    space = build_space(**cfg.searchspace)
    columns = load_columns(space, [TABLE, "package://nb201/costs.csv"])
    zero_cost = zero_cost_from_config(space, cfg.zero_cost)[0]
    out = {}
    for name, known in (("mobo", None), ("mobo", ["flops_m"]), ("nsga2", None)):
        goals = Goals.parse(["test_acc:max", "flops_m:min"], known=known)
        costs = KnownCosts(space, {"flops_m": columns["flops_m"]}) if known else None
        table = torch.stack([columns[n] for n in goals.columns], 1)
        strategy = instantiate_front_strategy(cfg.multiobjective.strategies[name], space, 0, goals, costs, zero_cost)
        rows: list[list[Any]] = []
        while len(rows) < 25:
            encodings = strategy.ask(None)[: 25 - len(rows)]
            values = table[space.index_of(torch.tensor(encodings, dtype=torch.long))].tolist()
            strategy.tell(encodings, values)
            rows += [[space.to_string(e), [repr(float(v)) for v in vs]] for e, vs in zip(encodings, values)]
        out[f"{name}{'+known' if known else ''}/0"] = rows
    return out


def asynchronous() -> dict[str, Any]:
    from nas.bench.asynchronous import SimulatedExecutor, make_strategy, simulated_seconds
    from nas.objectives.table import TableObjective
    from nas.search import run_search
    from nas.spaces import build_space

    space = build_space("nb201")
    table = TableObjective(space, TABLE, "test_acc")
    out = {}
    for name in ("bo", "evolution"):
        history = run_search(make_strategy(name, space, 0, "small"), table, 20, executor=SimulatedExecutor(4, simulated_seconds(space, 10.0)))  # type: ignore[arg-type]
        out[f"{name}/0"] = _trace(space, history.trials, history.evaluations)
    return out


def training() -> dict[str, Any]:
    """A real search (BO, 4 candidates of one epoch on the 8 x 8 digits) through ``nas.run``,
    pretrained on the deterministic zero-cost metrics (timed latency would differ run to run)."""
    from nas.run import run
    from tests.nas.tiny_runs import TINY_TRAINING

    with tempfile.TemporaryDirectory() as folder:
        cfg = _config("config", *TINY_TRAINING, "strategy=bo", "strategy.initial_points=2", "strategy.batch_size=1", *FAST_ENSEMBLE, "zero_cost.num_samples=16", "zero_cost.metrics=[params,flops,synflow,naswot,snip]", "threads=1", "budget=4", f"output_dir={folder}/run")
        import os

        previous = os.environ.get("NAS_CACHE_DIR")
        os.environ["NAS_CACHE_DIR"] = f"{folder}/cache"
        try:
            run(cfg)
        finally:
            if previous is None:
                os.environ.pop("NAS_CACHE_DIR", None)
            else:
                os.environ["NAS_CACHE_DIR"] = previous
        with sqlite3.connect(Path(folder) / "run" / "store.sqlite") as db:
            rows = db.execute("SELECT architecture, fidelity, value FROM evaluations ORDER BY batch, position").fetchall()
    return {"bo/0": [[a, f, repr(float(v))] for a, f, v in rows]}


MODES = {"tabular": tabular, "multi_fidelity": multi_fidelity, "fronts": fronts, "asynchronous": asynchronous, "training": training}

#: Modes whose values come from real training, and how far (percentage points) their first
#: value that differs may move. Training depends on the CPU's kernels (oneDNN picks them by
#: instruction set): another machine may classify a validation image differently, and BO, which
#: proposes from the values it has seen, then proposes other candidates. Such a trace is compared
#: bit for bit up to its first value that differs, which may differ by at most 3 of the 288
#: validation images of :func:`training`, and not beyond it.
ARITHMETIC_TOLERANCE: dict[str, float] = {"training": 100 * 3 / 288}


def difference(mode: str, key: str, generated: list[Any], stored: list[Any]) -> str | None:
    """Why the ``generated`` trace ``key`` of ``mode`` is not the ``stored`` one (``None``: it is).

    Rows of a trained mode are ``[architecture, fidelity, repr(value)]``."""
    tolerance = ARITHMETIC_TOLERANCE.get(mode)
    if tolerance is None:
        return None if generated == stored else f"{mode} {key}: the search's proposals or values changed"
    for i, (row, golden_row) in enumerate(zip(generated, stored)):
        if row[:2] != golden_row[:2]:
            return f"{mode} {key}: candidate {i} changed after the same values"
        if row[2] != golden_row[2]:
            moved = abs(float(row[2]) - float(golden_row[2]))
            return None if moved <= tolerance else f"{mode} {key}: candidate {i} scored {row[2]}, not {golden_row[2]}"
    return None if len(generated) == len(stored) else f"{mode} {key}: {len(generated)} evaluations, not {len(stored)}"


def traces(modes: list[str] | None = None) -> dict[str, Any]:
    return {mode: MODES[mode]() for mode in (modes or MODES)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the stored traces")
    args = parser.parse_args()
    generated = json.loads(json.dumps(traces()))
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(generated, indent=0) + "\n")
        print(f"written: {GOLDEN}")
    else:
        stored = json.loads(GOLDEN.read_text())
        changes = [why for mode in stored for key in stored[mode] if (why := difference(mode, key, generated[mode].get(key, []), stored[mode][key]))]
        print("\n".join(changes) if changes else "unchanged")
