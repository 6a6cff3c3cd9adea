"""NAS-Bench-201 with its real 12-epoch runs as a low fidelity that is a training of its own
(benchmark=nb201_mf): the two-table objective, its bad input, the peers on it, and the
harness' honest summaries (returned architecture, misses counted at the budget)."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nas.benchmark import run_benchmark
from nas.bench.multifidelity import CostRecord, best_by_cost, markdown_report, record_of
from nas.cli import user_error_of
from nas.errors import NASError
from nas.fidelity import FidelitySchedule
from nas.bench.mf_peers import CostTracker
from nas.objectives import TableObjective
from nas.paths import resolve_path
from nas.search import run_search
from nas.spaces.nb201 import NB201Space
from nas.strategies import SuccessiveHalving

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")
TABLE, LOW = "package://nb201/cifar10.csv", "package://nb201/cifar10_12ep.csv"
#: The architecture with the best 200-epoch validation and test accuracy (94.3733).
OPTIMUM = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def _rows(path: str) -> dict[str, dict[str, str]]:
    with resolve_path(path).open(newline="") as handle:
        return {row["arch"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def twelve(nb201: NB201Space) -> TableObjective:
    return TableObjective(nb201, TABLE, "test_acc", low_fidelity_column="test_acc_12ep", low_table=LOW)


def _compose(tmp_path: Path, *overrides: str) -> object:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="benchmark", overrides=["benchmark=nb201_mf", "workers=1", f"output_dir={tmp_path}", *overrides])


def test_a_twelve_epoch_run_is_read_from_its_own_table_charged_its_share_and_never_free(nb201: NB201Space, twelve: TableObjective) -> None:
    low, full = _rows(LOW), _rows(TABLE)
    assert list(low) == list(full) and len(low) == 15_625  # the shipped file covers the space, in the same order
    for arch in (OPTIMUM, next(iter(low))):
        encoding = nb201.parse(arch)
        cheap, whole = twelve.evaluate(encoding, "lo"), twelve.evaluate(encoding, "hi")
        assert (cheap.value, cheap.cost) == (pytest.approx(float(low[arch]["test_acc_12ep"])), pytest.approx(0.06))
        assert (whole.value, whole.cost) == (pytest.approx(float(full[arch]["test_acc"])), 1.0)
        assert whole.metrics == {}  # a 200-epoch run does not yield the 12-epoch one
    assert not twelve.continuation and not twelve.free_low_fidelity
    # The proxy column of the same runs (nb201_proxy) is still reported for free.
    proxy = TableObjective(nb201, TABLE, "test_acc", low_fidelity_column="val_acc")
    assert proxy.free_low_fidelity and proxy.evaluate(nb201.parse(OPTIMUM), "hi").metrics


def test_a_promotion_pays_the_whole_full_evaluation(nb201: NB201Space, twelve: TableObjective) -> None:
    strategy = SuccessiveHalving(nb201, FidelitySchedule(hi_epochs=200, lo_epochs=12), seed=0, eta=16, rungs="schedule")
    history = run_search(strategy, twelve, budget=1.96)  # one bracket: 16 twelve-epoch runs, the best of them trained fully
    fidelities = [t.fidelity for t in history.trials]
    assert fidelities == ["lo"] * 16 + ["hi"]
    assert history.cost == pytest.approx(16 * 0.06 + 1.0)
    # A full evaluation reports no free twelve-epoch value: the strategy sees only what it ran.
    assert set(strategy.observations["lo"]) == {t.encoding for t in history.trials[:16]}
    promoted = history.trials[-1].encoding
    assert strategy.observations["lo"][promoted] == max(strategy.observations["lo"].values())


def _write(path: Path, rows: dict[str, dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["arch", *columns], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows.values())
    return path


def test_a_low_table_of_other_architectures_is_refused_naming_one(nb201: NB201Space, tmp_path: Path) -> None:
    low = _rows(LOW)
    first = next(iter(low))
    named = re.escape(first)
    missing = _write(tmp_path / "missing.csv", {a: r for a, r in low.items() if a != first}, ["val_acc_12ep"])
    with pytest.raises(NASError, match=rf"^The low-fidelity table {missing} must list the architectures of .*cifar10\.csv, and no others: {named} is in .*cifar10\.csv but not in {missing} \(15625 architectures in the main table, 15624 in the low-fidelity one\)\.$"):
        TableObjective(nb201, TABLE, "test_acc", low_fidelity_column="val_acc_12ep", low_table=missing)
    # The other way round: a main table that lacks an architecture the low one lists.
    main = _write(tmp_path / "main.csv", {a: r for a, r in _rows(TABLE).items() if a != first}, ["test_acc"])
    with pytest.raises(NASError, match=rf"no others: {named} is in .*cifar10_12ep\.csv but not in {main}"):
        TableObjective(nb201, main, "test_acc", low_fidelity_column="val_acc_12ep", low_table=LOW)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("low_column=val_acc_200ep", r"has no column 'val_acc_200ep'; its columns are val_acc_12ep, test_acc_12ep\.$"),
        ("low_cost=0", r"low_fidelity_cost must be in \(0, 1\), got 0"),
        ("low_cost=1.0", r"low_fidelity_cost must be in \(0, 1\), got 1\.0"),
        ("low_table=/nowhere/12ep.csv", r"Benchmark table /nowhere/12ep\.csv does not exist"),
        ("include=[optuna_tpe_hyperband]", r"^The peer 'optuna_tpe_hyperband' reports every epoch of a run, which needs an objective that continues runs; TableObjective cannot"),
        ("strategies.hyperband.eta=3", r"^Hyperband evaluates at the fidelities 22, 67, hi, which this objective does not offer: Unknown fidelity '22'; .* cannot continue a run to other epochs \(successive halving and Hyperband take rungs=schedule on a table\)\.$"),
    ],
)
def test_nb201_mf_bad_input_is_one_sentence_before_any_run(tmp_path: Path, override: str, message: str) -> None:
    cfg = _compose(tmp_path, "seeds=1", "budget=2", "include=[hyperband]", "strategies.hyperband.rungs=geometric", override)
    with pytest.raises(Exception) as raised:  # Hydra wraps a constructor's error; the command line prints the sentence behind it
        run_benchmark(cfg)  # type: ignore[arg-type]
    assert re.search(message, str(user_error_of(raised.value)))
    assert not (tmp_path / "records.jsonl").exists()


def test_the_returned_architecture_is_valued_in_the_reported_column() -> None:
    a, b, c = (0,), (1,), (2,)
    test_acc = {a: 90.0, b: 94.0, c: 93.0}
    # Searched on validation accuracy: b then c improve it, a cheap run and a worse run change nothing.
    events = [(1.0, 80.0, a), (1.06, None, b), (2.06, 85.0, b), (3.06, 84.0, a), (4.06, 86.0, c)]
    trace = best_by_cost(events, lambda enc, _: test_acc[enc])
    assert trace == [[1.0, 90.0], [2.06, 94.0], [4.06, 93.0]]  # c has the better validation value, and is returned
    record = record_of(0, events, [1, 3, 5], target=94.0, report=lambda enc, _: test_acc[enc])
    assert record.best_at == {"1": 90.0, "3": 94.0, "5": 93.0} and record.cost_to_target == 2.06
    assert (record.evaluations, record.full_evaluations) == (5, 4)


def test_the_summary_counts_a_miss_at_the_budget_with_standard_errors() -> None:
    records = [CostRecord(seed=s, best_by_cost=[[1.0, 94.0]], best_at={"5": 94.0}, cost_to_target=c, evaluations=1, full_evaluations=1, cost=c or 100.0) for s, c in enumerate([4.0, 8.0, None])]
    report = markdown_report({"bo": records}, {"target": 94.37, "budget": 100.0, "seeds": 3})
    assert "a seed that never reaches it counts as the budget, 100" in report
    # (4 + 8 + 100) / 3 = 37.3, standard error 31.4; over the two seeds that reached it: 6.0 ± 2.0.
    assert "| bo | 37.3 ± 31.4 | 2/3 | 6.0 ± 2.0 (4–8) |" in report


def test_nb201_mf_runs_the_peers_side_by_side_and_stops_a_seed_at_the_optimum(tmp_path: Path) -> None:
    pytest.importorskip("smac")
    cfg = _compose(tmp_path, "seeds=1", "budget=4", "include=[successive_halving,smac_mf,random]", "cost_checkpoints=[2,4]")
    results = run_benchmark(cfg)  # type: ignore[arg-type]
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["target"] == pytest.approx(94.3733)
    (smac,) = results["smac_mf"]  # type: ignore[index]
    # SMAC's Hyperband with eta=16 asks for 12.5 and 200 epochs only: cheap runs of 0.06 and full ones of 1.
    cheap = smac.evaluations - smac.full_evaluations
    assert cheap >= 16 and smac.cost == pytest.approx(cheap * 0.06 + smac.full_evaluations)
    (halving,) = results["successive_halving"]  # type: ignore[index]
    assert halving.best_by_cost[0][0] == pytest.approx(1.96)  # 16 cheap runs, then the first full evaluation
    report = (tmp_path / "results.md").read_text()
    assert report.startswith("## How each cheaper fidelity ranks every architecture of the table against the reported full evaluation")
    assert "| test_acc_12ep (0.06 of a full evaluation) | 0.87 |" in report and "miss = budget" in report



def test_a_search_ends_once_it_has_evaluated_the_optimum_fully(nb201: NB201Space, twelve: TableObjective) -> None:
    tracker = CostTracker(twelve, FidelitySchedule(hi_epochs=200, lo_epochs=12), budget=10, stop_value=twelve.optimum)
    optimum, other = nb201.parse(OPTIMUM), tuple(nb201.all_codes[0].tolist())
    tracker.evaluate(optimum, "lo")
    tracker.evaluate(other, "hi")
    assert tracker.running  # a cheap run of the optimum tells nothing final
    tracker.evaluate(optimum, "hi")
    assert not tracker.running and tracker.spent == pytest.approx(2.06)
    assert [(cost, value) for cost, value, _ in tracker.events] == [(pytest.approx(0.06), None), (pytest.approx(1.06), pytest.approx(10.0)), (pytest.approx(2.06), pytest.approx(94.3733))]
