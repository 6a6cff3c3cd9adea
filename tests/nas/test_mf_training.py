"""Multi-fidelity BO on real training (embedded digits): promotions continue the
candidate's Lightning checkpoint and pay only the extra epochs."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nas.run import run
from tests.nas.tiny_runs import TINY_TRAINING

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")


def test_multi_fidelity_bo_continues_promoted_candidates_from_their_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    overrides = [
        *[o for o in TINY_TRAINING if not o.startswith(("strategy=", "fidelity."))],
        "strategy=bo_multifidelity", "strategy.pretraining=none", "strategy.initial_points=3", "strategy.pool_size=200",
        "fidelity=multi", "fidelity.hi_epochs=2", "fidelity.lo_epochs=1", "fidelity.p=3", "fidelity.q=2", "fidelity.f=2",
        "ensemble.members=2", "ensemble.trunk=[16]", "ensemble.head_hidden=16", "threads=1",
        "budget=4", f"output_dir={tmp_path / 'run'}",
    ]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = run(cfg)
    with sqlite3.connect(tmp_path / "run" / "store.sqlite") as db:
        rows = db.execute("SELECT encoding, fidelity, status, value, cost, metrics FROM evaluations ORDER BY batch, position").fetchall()
    assert {r[2] for r in rows} == {"ok"}
    lo = {r[0]: r for r in rows if r[1] == "lo"}
    hi = [r for r in rows if r[1] == "hi"]
    assert len(lo) >= 3 and hi
    for encoding, _, _, value, cost, metrics in hi:
        # Promoted from the low fidelity: it continues the 1-epoch run, paying 1 of 2 epochs.
        assert encoding in lo
        assert cost == pytest.approx(0.5)
        epochs = json.loads(metrics)
        assert epochs["value_at_epoch_1"] == pytest.approx(lo[encoding][3])  # the same run, continued
        assert epochs["value_at_epoch_2"] == pytest.approx(value)
    assert all(r[4] == pytest.approx(0.5) for r in lo.values())
    assert summary["cost"] == pytest.approx(sum(r[4] for r in rows))
    for encoding in lo:
        assert (tmp_path / "run" / "checkpoints" / f"arch-{'-'.join(map(str, json.loads(encoding)))}.ckpt").is_file()
