"""A short real search (real training) on every thesis search space, on the embedded digits."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nas.run import run

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")


@pytest.mark.slow
@pytest.mark.parametrize("space", ["mobileone", "swiftformer_hybrid", "moat_hybrid", "attention"])
def test_real_search_on_each_space(space: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    extra = ["searchspace.match=flops", f"searchspace.cache_dir={tmp_path / 'cache'}"] if space == "attention" else []
    overrides = [
        f"searchspace={space}",
        "searchspace.resolution=32",
        *extra,
        "fidelity.hi_epochs=1",
        "budget=3",
        "zero_cost.num_samples=12",
        "zero_cost.warmup=0",
        "zero_cost.repetitions=1",
        "strategy.initial_points=2",
        "strategy.batch_size=1",
        "threads=1",
        f"output_dir={tmp_path / 'run'}",
    ]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = run(cfg)
    assert summary["evaluations"] == 3 and summary["failed"] == 0
    assert summary["best_value"] is not None and summary["best_value"] >= 0.0
    assert (tmp_path / "run" / "store.sqlite").exists()
