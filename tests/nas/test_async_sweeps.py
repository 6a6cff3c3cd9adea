"""Hydra's joblib and submitit launchers run multirun sweeps of whole searches, each with its own store."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nas.tiny_runs import assert_table_run_is_exact

ROOT = Path(__file__).resolve().parents[2]


def _sweep(preset: str, tmp_path: Path) -> None:
    args = ["--config-dir", str(ROOT / "sweeps"), "--config-name", preset, "-m", "searchspace=nb201", "objective=table", "strategy=random,local_search", "seed=0", "budget=10"]
    env = {**os.environ, "WANDB_MODE": "disabled", "NAS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "nas.run", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    stores = set()
    for strategy in ("random", "local_search"):
        run_dir = tmp_path / "multirun" / "nb201_strategies" / f"{strategy}-seed0"
        assert_table_run_is_exact(run_dir, 10)
        with sqlite3.connect(run_dir / "store.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM evaluations WHERE status = 'ok'").fetchone() == (10,)
        stores.add(run_dir / "store.sqlite")
    assert len(stores) == 2


@pytest.mark.slow
def test_the_joblib_launcher_runs_searches_side_by_side_each_with_its_own_store(tmp_path: Path) -> None:
    _sweep("nb201_strategies_joblib", tmp_path)


@pytest.mark.slow
def test_the_submitit_launcher_runs_each_search_as_a_job_with_its_own_store(tmp_path: Path) -> None:
    _sweep("nb201_strategies_submitit", tmp_path)
