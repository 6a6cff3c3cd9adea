"""Command-line overrides and checks shared by the tests that run real searches."""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import torch

#: `python -m nas.run` training each candidate of random search for one epoch on 8x8 digits.
TINY_TRAINING: list[str] = [
    "searchspace=nb201_small",
    "dataset=digits",
    "objective.optimizer.lr=1e-2",  # one epoch of a few steps: the demo's warm-up would eat it
    "objective.optimizer.warmup_epochs=0",
    "searchspace.channels=4",
    "searchspace.resolution=8",
    "objective.measure_latency=false",
    "fidelity.hi_epochs=1",
    "strategy=random",
    "workers=1",  # in the test's process (the preset's two worker processes would each import torch first)
]


def assert_table_run_is_exact(run_dir: Path, evaluations: int) -> None:
    """A finished ``objective=table`` search on NAS-Bench-201's test accuracy reports what it
    evaluated: ``evaluations`` rows, each the table's value of its architecture, and a summary
    whose best value and architecture are those of the best row (the earliest on ties)."""
    from nas.objectives.table import TableObjective
    from nas.spaces import build_space

    space = build_space("nb201")
    table = TableObjective(space, "package://nb201/cifar10.csv", "test_acc")
    with sqlite3.connect(run_dir / "store.sqlite") as db:
        rows = db.execute("SELECT architecture, value FROM evaluations WHERE status = 'ok' ORDER BY arrival").fetchall()
    assert len(rows) == evaluations
    for architecture, value in rows:
        assert math.isclose(value, float(table.values[space.index_of(torch.tensor([space.parse(architecture)]))[0]]), abs_tol=1e-9)
    best_architecture, best_value = max(rows, key=lambda row: row[1])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["evaluations"] == evaluations and summary["best_value"] == best_value and summary["best_architecture"] == best_architecture
