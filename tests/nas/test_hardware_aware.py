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

from nas.costs.flops import network_costs
from nas.errors import NASError
from nas.objectives.table import TableObjective
from nas.costs.latency import check_device, measure_with_reference, write_latency_table
from nas.costs.columns import load_columns
from nas.export import select_evaluations
from nas.run import run
from nas.report.status import read_run
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
    with pytest.raises(NASError, match="has no column or metric 'energy_mj'; valid ones are accuracy, flops_m, params_m, latency_ms"):
        run(_config(*TABLE_SEARCH, "strategy=nsga2", "objectives=[accuracy:max,energy_mj:min]", f"output_dir={tmp_path / 'b'}"))
    with pytest.raises(NASError, match=r"Known costs \(latency_ms\) need a cost table covering every member"):
        run(_config(*TABLE_SEARCH, "strategy=nsga2", "objectives=[accuracy:max,latency_ms:min]", "known=[latency_ms]", f"output_dir={tmp_path / 'c'}"))
    assert not (tmp_path / "c").exists()  # refused before anything ran


def test_costs_no_table_holds_are_measured_before_training_and_over_budget_candidates_are_not_trained(tmp_path: Path) -> None:
    budget = 0.4  # M parameters: about 40 % of NAS-Bench-201's members
    overrides = [*TABLE_SEARCH, "strategy=random_front", "objectives=[accuracy:max]", f"constraints={{params_m:{budget}}}", "cost_tables=[]", "budget=8", f"measured_costs.cache_dir={tmp_path / 'cache'}"]
    summary = run(_config(*overrides, f"output_dir={tmp_path / 'run'}"))
    state = read_run(tmp_path / "run")
    refused = [e for e in state.evaluations if e.status == "failed"]
    trained = [e for e in state.evaluations if e.status == "ok"]
    assert refused and len(trained) == 8  # the budget counts trained candidates only
    assert all(e.cost == 0 and e.error.startswith("over budget before training (params_m") and e.metrics["params_m"] > budget for e in refused)
    assert all(e.metrics["params_m"] <= budget for e in trained)
    assert summary["cost"] == pytest.approx(8.0)
    # Measured on the network built now, as the shipped table has them; cached per architecture.
    shipped = load_columns(NB201Space(), ["package://nb201/costs.csv"])
    (cache,) = (tmp_path / "cache" / "costs").glob("nb201-*-cpu.csv")
    cached = load_columns(NB201Space(), [cache])["params_m"]
    assert int((~torch.isnan(cached)).sum()) == len(state.evaluations)
    assert torch.allclose(cached[~torch.isnan(cached)], shipped["params_m"][~torch.isnan(cached)].double(), rtol=1e-6)
    # A longer search over the same store measures only its new candidates.
    before = cache.read_text().splitlines()
    run(_config(*overrides[:-2], "budget=10", f"measured_costs.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}"))
    after = cache.read_text().splitlines()
    assert after[: len(before)] == before and len(after) > len(before)


def test_a_budget_no_candidate_meets_ends_the_search_after_a_bounded_number_of_refusals(tmp_path: Path) -> None:
    from nas.search import FREE_EVALUATIONS_FLOOR, FREE_EVALUATIONS_PER_BUDGET

    overrides = [*TABLE_SEARCH, "strategy=random_front", "objectives=[accuracy:max]", "constraints={params_m:0.001}", "cost_tables=[]", "budget=1"]
    summary = run(_config(*overrides, f"measured_costs.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}"))
    assert summary["evaluations"] == summary["failed"] == FREE_EVALUATIONS_FLOOR + FREE_EVALUATIONS_PER_BUDGET
    assert summary["cost"] == 0 and summary["best_value"] is None


def test_measured_latency_is_cached_per_architecture_and_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nas.costs.measured import MeasuredCosts

    small = NB201Space(channels=4, cells_per_stage=1, resolution=8)
    code = tuple(small.all_codes[1234].tolist())
    protocol = {"rounds": 2, "repetitions": 2, "warmup": 1}
    built: list[tuple[int, ...]] = []
    to_module = NB201Space.to_module
    monkeypatch.setattr(NB201Space, "to_module", lambda self, encoding, *a, **k: built.append(tuple(encoding)) or to_module(self, encoding, *a, **k))
    first = MeasuredCosts(small, ["latency_ms", "flops_m"], cache_dir=tmp_path, **protocol)(code)
    assert first["latency_ms"] > 0 and first["flops_m"] > 0
    assert built.count(code) == 1  # one network serves every cost (the other one built is the protocol's reference)
    assert first["flops_m"] == pytest.approx(float(network_costs(small, torch.tensor([code]))[0, 0]))
    monkeypatch.undo()
    # A new search (a new process) reads the cache: no network is built again.
    monkeypatch.setattr(NB201Space, "to_module", lambda *_: (_ for _ in ()).throw(AssertionError("measured twice")))
    assert MeasuredCosts(small, ["latency_ms", "flops_m"], cache_dir=tmp_path, **protocol)(code) == first
    monkeypatch.undo()
    # Parallel workers each hold a copy: what each measures stays in the shared file.
    workers = [MeasuredCosts(small, ["params_m"], cache_dir=tmp_path / "shared") for _ in range(2)]
    for i, worker in enumerate(workers * 2):
        worker(tuple(small.all_codes[i].tolist()))
    assert int((~torch.isnan(load_columns(small, [workers[0].path])["params_m"])).sum()) == 4
    on_onnxruntime = MeasuredCosts(small, ["latency_ms"], device="onnxruntime", cache_dir=tmp_path, **protocol)
    assert on_onnxruntime.path != MeasuredCosts(small, ["latency_ms"], cache_dir=tmp_path).path  # one cache per device
    with pytest.raises(NASError, match="Cost 'energy_mj' cannot be measured before training; measurable costs are flops_m, params_m, latency_ms"):
        MeasuredCosts(small, ["energy_mj"], cache_dir=tmp_path)


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


@pytest.mark.parametrize("device", ["cpu", "onnxruntime"])
def test_latency_table_is_a_cost_table(tmp_path: Path, nb201: NB201Space, device: str) -> None:
    small = NB201Space(channels=4, cells_per_stage=1, resolution=8)
    codes = small.all_codes[[0, 100, 15_624]]
    write_latency_table(small, codes, device, tmp_path / "latency.csv", rounds=2, repetitions=2)
    columns = load_columns(small, [tmp_path / "latency.csv"])
    assert {"latency_ms", "latency_iqr_ms", "latency_ratio", "rounds", "discarded_rounds"} <= set(columns)
    measured = columns["latency_ms"][~torch.isnan(columns["latency_ms"])]
    assert measured.numel() == 3 and bool((measured > 0).all())


def test_onnxruntime_runs_the_fused_network_it_times() -> None:
    from nas.costs.latency import runnable

    small = NB201Space(channels=4, cells_per_stage=1, resolution=8)
    network = small.to_module(tuple(small.all_codes[4321].tolist())).eval()
    sample = small.sample_input(2)
    (logits,) = runnable(network, "onnxruntime", sample)(sample)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logits), network(sample), atol=1e-4)


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


def test_a_reference_over_the_budget_is_said_so_and_still_trained_as_the_yardstick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"  # the ResNet-like cell: 1.1 M parameters
    summary = run(_config(*TABLE_SEARCH, "strategy=random_front", "objectives=[accuracy:max]", "constraints={params_m:0.4}", "budget=5", f"reference='{reference}'", f"output_dir={tmp_path}"))
    expected = float(TableObjective(NB201Space(), "package://nb201/cifar10.csv", "test_acc").evaluate(NB201Space().parse(reference)).value)
    assert summary["reference"]["value"] == pytest.approx(expected)
    assert summary["reference"]["over_budget"].startswith("params_m 1.") and summary["reference"]["over_budget"].endswith("budget params_m<=0.4")
    assert "the reference is over the budget (params_m 1." in capsys.readouterr().out
