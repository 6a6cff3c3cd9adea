"""The benchmark harness, composed from the real Hydra configs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nas.benchmark import run_benchmark
from nas.errors import NASError
from nas.objectives.table import TableObjective
from nas.spaces import build_space
from nas.strategies import RandomSearch

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")
FAST_ENSEMBLE = ["ensemble.trunk=[32,32]", "ensemble.head_hidden=32", "ensemble.fit_epochs=3", "ensemble.members=3"]


def _config(tmp_path: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(
            "benchmark",
            overrides=[f"output_dir={tmp_path}", "workers=1", "seeds=2", "budget=40", "spearman_at=[20,40]", *FAST_ENSEMBLE, *overrides],
        )


def test_benchmark_writes_tables_traces_and_plot(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "include=[random,local_search,bo_no_pretraining]")
    run_benchmark(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["strategies"]) == {"random", "local_search", "bo_no_pretraining"}
    assert results["optimum"] == pytest.approx(94.3733)
    for name, records in results["strategies"].items():
        assert [r["seed"] for r in records] == [0, 1]
        for r in records:
            assert len(r["best_so_far"]) == 40
            # The first evaluation whose running best is the optimum, or none within the budget.
            hits = [i + 1 for i, best in enumerate(r["best_so_far"]) if best >= results["optimum"] - 1e-9]
            assert r["evals_to_optimum"] == (hits[0] if hits else None)
            assert r["best_at_100"] is None  # the budget is 40
    bo = results["strategies"]["bo_no_pretraining"]
    for r in bo:
        # A seed ends at the evaluation that finds the optimum, before that batch's checkpoint.
        found_at = r["evals_to_optimum"]
        assert set(r["spearman"]) == {str(c) for c in (20, 40) if found_at is None or c < found_at}
        assert all(-1 <= rho <= 1 for rho in r["spearman"].values())
        if found_at is not None:
            assert r["best_so_far"][found_at - 1:] == [results["optimum"]] * (40 - found_at + 1)
    report = (tmp_path / "results.md").read_text()
    assert "| local_search |" in report and "Evaluations to reach the optimum" in report and "Spearman" in report
    assert (tmp_path / "convergence.png").stat().st_size > 10_000


def test_benchmark_results_merge_side_by_side(tmp_path: Path) -> None:
    run_benchmark(_config(tmp_path / "a", "include=[random]"))
    run_benchmark(_config(tmp_path / "b", "include=[local_search]"))
    merged = _config(tmp_path / "m", f"merge=[{tmp_path / 'a'},{tmp_path / 'b'}]")
    run_benchmark(merged)
    assert set(json.loads((tmp_path / "m" / "results.json").read_text())["strategies"]) == {"random", "local_search"}
    run_benchmark(_config(tmp_path / "c", "include=[random]", "budget=30"))
    with pytest.raises(NASError, match="only like runs can be merged"):
        run_benchmark(_config(tmp_path / "n", f"merge=[{tmp_path / 'a'},{tmp_path / 'c'}]"))


def test_validation_protocol_reports_the_test_accuracy_of_what_it_would_return(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "include=[random,bo]", "column=val_acc", "report_column=test_acc", "budget=60", "seeds=1", "spearman_at=[60]")
    run_benchmark(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["column"] == "val_acc" and results["report_column"] == "test_acc"
    assert results["optimum"] == pytest.approx(94.3733)  # the reported column's optimum
    for records in results["strategies"].values():
        (record,) = records
        assert set(record["regret_at"]) == {"50"}
        assert max(record["best_so_far"]) < 92  # best_so_far is in the searched column (val_acc tops at 91.6)
    # The regret is in test accuracy, of the architecture with the best validation accuracy:
    # random search's first 50 proposals, replayed here, and the table give it exactly.
    space = build_space("nb201")
    val, test = (TableObjective(space, "package://nb201/cifar10.csv", c).values for c in ("val_acc", "test_acc"))
    random = RandomSearch(space, seed=0)
    picked = space.index_of(torch.tensor([random.ask(1)[0] for _ in range(50)]))
    returned = picked[int(torch.nan_to_num(val[picked], nan=-1.0).argmax())]
    (record,) = results["strategies"]["random"]
    assert record["regret_at"]["50"] == pytest.approx(results["optimum"] - float(test[returned]))
    bo = results["strategies"]["bo"][0]
    # The pretrained surrogate, before any observation: each metric head's rank correlation.
    assert set(bo["metric_head_spearman"]) == {"params", "synflow", "naswot", "jacob_cov", "snip", "grad_norm"}
    assert bo["metric_head_spearman"]["synflow"] > 0.5
    report = (tmp_path / "results.md").read_text()
    assert "searched on val_acc, reported in test_acc" in report and "Regret of the returned architecture" in report


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("include=[bo,annealing]", "Unknown strategy 'annealing'; valid strategies are bo, "),
        ("budget=0", "budget must be a positive number"),
        ("seeds=0", "number of seeds must be positive"),
        ("column=flops", "has no column 'flops'; its columns are test_acc, val_acc, val_acc_seeds"),
        ("table=/nonexistent/table.csv", "Benchmark table /nonexistent/table.csv does not exist"),
        ("report_column=test_accuracy", "has no column 'test_accuracy'; its columns are test_acc, val_acc, val_acc_seeds"),
    ],
)
def test_benchmark_bad_input(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(NASError, match=message.replace("(", r"\(")):
        run_benchmark(_config(tmp_path, "include=[random]", override))


def test_command_line_error_is_one_sentence_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nas.benchmark", "column=flops", f"output_dir={tmp_path}", "include=[random]"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Benchmark table") and "has no column 'flops'" in result.stderr
