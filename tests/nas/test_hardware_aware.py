"""Searches with goals in the product (`python -m nas.run`) and the latency protocol."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from nas.errors import NASError
from nas.latency_table import check_device, measure_with_reference, write_latency_table
from nas.columns import load_columns
from nas.export import select_evaluations
from nas.run import run
from nas.status import read_run
from nas.spaces.nb201 import NB201Space

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")
TABLE_SEARCH = ["searchspace=nb201", "objective=table", "zero_cost=nb201_table"]


def _config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_a_front_search_stores_prints_and_plots_its_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(*TABLE_SEARCH, "strategy=nsga2", "strategy.population_size=8", "objectives=[accuracy:max,flops_m:min]", "constraints={params_m:0.6}", "known=[flops_m,params_m]", "budget=24", f"output_dir={tmp_path}")
    summary = run(cfg)
    front = summary["front"]
    assert front and summary["goals"].startswith("accuracy:max, flops_m:min subject to params_m<=0.6")
    assert all(row["params_m"] <= 0.6 for row in front)
    accuracies = [row["accuracy"] for row in front]
    flops = [row["flops_m"] for row in front]
    assert accuracies == sorted(accuracies, reverse=True) and flops == sorted(flops, reverse=True)  # a trade-off, best first
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["front"] == front
    assert (tmp_path / "front.png").stat().st_size > 5_000
    state = read_run(tmp_path)  # what nas.status shows and nas.export front mode exports
    assert state.front == [row["architecture"] for row in front]
    assert [e.architecture for e in select_evaluations(state, "front", top_k=1)] == state.front  # best accuracy first
    printed = capsys.readouterr().out
    assert "Pareto front (accuracy:max, flops_m:min" in printed and "accuracy | flops_m | params_m | architecture" in printed


def test_goal_errors_in_the_product_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(NASError, match="needs a strategy for fronts and budgets: strategy=mobo"):
        run(_config(*TABLE_SEARCH, "strategy=random", "objectives=[accuracy:max,flops_m:min]", f"output_dir={tmp_path / 'a'}"))
    with pytest.raises(NASError, match="has no column or metric 'latency_ms'; valid ones are accuracy, flops_m, params_m"):
        run(_config(*TABLE_SEARCH, "strategy=nsga2", "objectives=[accuracy:max,latency_ms:min]", f"output_dir={tmp_path / 'b'}"))


def test_device_that_is_not_here_is_refused() -> None:
    with pytest.raises(NASError, match="Unknown device 'tpu'; valid devices are cpu, cuda"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(NASError, match="Device 'cuda' is not available on this machine"):
            check_device("cuda")


class _Busy(nn.Module):
    """A reference network on a machine where another job takes the cores on some calls."""

    def __init__(self, busy_calls: set[int]) -> None:
        super().__init__()
        self.calls = 0
        self.busy_calls = busy_calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(0.05 if self.calls in self.busy_calls else 0.005)
        return x


def test_rounds_whose_reference_runs_slow_are_measured_again() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    sample = torch.randn(1, 3, 8, 8)
    # Warm-up makes 3 calls; the 2nd round's reference passes (calls 14..18 with 5 repetitions) run slow.
    busy = _Busy(set(range(14, 19)))
    result = measure_with_reference(model, busy, sample, rounds=3, repetitions=5, warmup=3, slowdown=3.0)
    assert result.rounds == 3 and result.discarded_rounds >= 1  # the busy round, whatever else the machine does
    assert result.latency_ms > 0 and result.latency_iqr_ms >= 0 and 0 < result.latency_ratio < 5


def test_latency_table_is_a_cost_table(tmp_path: Path, nb201: NB201Space) -> None:
    small = NB201Space(channels=4, cells_per_stage=1, resolution=8)
    codes = small.all_codes[[0, 100, 15_624]]
    write_latency_table(small, codes, torch.device("cpu"), tmp_path / "latency.csv", rounds=2, repetitions=2)
    columns = load_columns(small, [tmp_path / "latency.csv"])
    assert {"latency_ms", "latency_iqr_ms", "latency_ratio", "rounds", "discarded_rounds"} <= set(columns)
    measured = columns["latency_ms"][~torch.isnan(columns["latency_ms"])]
    assert measured.numel() == 3 and bool((measured > 0).all())


def test_latency_head_completes_a_sampled_table_and_reports_its_error(nb201: NB201Space) -> None:
    """FLOPs stand in for measured latencies: a cost with a known, exact structure."""
    from nas.latency_table import predict_latencies

    flops = load_columns(nb201, ["package://nb201/costs.csv"])["flops_m"]
    sample = torch.randperm(nb201.size, generator=torch.Generator().manual_seed(0))[:200]
    predicted, error = predict_latencies(nb201, nb201.all_codes[sample], flops[sample])
    assert error.held_out == 40 and error.spearman > 0.8 and error.median_relative_error < 0.3
    rest = torch.ones(nb201.size, dtype=torch.bool)
    rest[sample] = False
    from scipy.stats import spearmanr

    assert spearmanr(predicted[rest].numpy(), flops[rest].numpy()).statistic > 0.8
