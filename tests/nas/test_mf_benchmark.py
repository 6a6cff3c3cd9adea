"""Multi-fidelity search on NAS-Bench-301's surrogate: Hyperband's geometric rungs and
continuation, free low-fidelity observations, failure costs, and the cost-based harness."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nas.errors import NASError
from nas.fidelity import FidelitySchedule
from nas.objectives import Evaluation, TableObjective
from nas.search import run_search
from nas.spaces import build_space
from nas.spaces.nb201 import NB201Space
from nas.spaces.nb301 import NB301Space
from nas.strategies import Hyperband, MultiFidelityStrategy, SuccessiveHalving
from nas.strategies.base import Trial

pytest.importorskip("onnxruntime")

from nas.objectives.surrogate_benchmark import SurrogateBenchmarkObjective  # noqa: E402

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")
NB301_EPOCHS = FidelitySchedule(hi_epochs=98, lo_epochs=12)


@pytest.fixture(scope="module")
def space() -> NB301Space:
    return build_space("nb301")  # type: ignore[return-value]


def test_hyperband_runs_li_et_al_brackets_and_promotions_pay_only_extra_epochs(space: NB301Space) -> None:
    strategy = Hyperband(space, NB301_EPOCHS, seed=0, eta=3, min_epochs=1)
    assert strategy.levels == ("1", "4", "11", "33", "hi")
    assert [strategy.bracket_plan(i) for i in range(5)] == [(0, 81), (1, 34), (2, 15), (3, 8), (4, 5)]
    objective = SurrogateBenchmarkObjective(space, NB301_EPOCHS)
    history = run_search(strategy, objective, budget=356 / 98)  # exactly the first bracket
    rungs = [t.fidelity for t in history.trials]
    assert [rungs.count(level) for level in strategy.levels] == [81, 27, 9, 3, 1]
    # Each rung holds the best third of the one below, judged on the objective's own values.
    first = {t.encoding: e.value for t, e in zip(history.trials, history.evaluations) if t.fidelity == "1"}
    second = [t.encoding for t in history.trials if t.fidelity == "4"]
    assert set(second) == set(sorted(first, key=first.get, reverse=True)[:27])
    # 81 x 1 + 27 x 3 + 9 x 7 + 3 x 22 + 1 x 65 epochs: a promoted trial pays its extra epochs only.
    assert history.cost == pytest.approx(356 / 98)


def test_successive_halving_on_a_table_keeps_the_schedule_rungs(nb201: NB201Space) -> None:
    schedule = FidelitySchedule(hi_epochs=200, lo_epochs=12)
    assert SuccessiveHalving(nb201, schedule, rungs="schedule").levels == ("lo", "hi")
    assert SuccessiveHalving(nb201, schedule).levels == ("22", "67", "hi")  # 200 / 9, 200 / 3, 200
    with pytest.raises(NASError, match="must be at least two ascending epochs ending at hi_epochs=200"):
        SuccessiveHalving(nb201, schedule, rungs=[12, 100])


def test_a_full_evaluation_gives_its_low_fidelity_value_whatever_the_epochs(nb201: NB201Space) -> None:
    # The table's low fidelity is a proxy column standing for 12 epochs; the search's schedule says 1.
    table = TableObjective(nb201, "package://nb201/cifar10.csv", "test_acc", low_fidelity_column="val_acc")
    strategy = MultiFidelityStrategy(nb201, FidelitySchedule(hi_epochs=4, lo_epochs=1))
    encoding = tuple(nb201.all_codes[77].tolist())
    strategy.observe([Trial(encoding, "hi")], [table.evaluate(encoding, "hi")])
    assert strategy.observations["lo"] == {encoding: pytest.approx(float(table.low_values[77]))}  # type: ignore[index]


class _BrokenAtLowFidelity:
    """An objective whose low-fidelity runs crash (e.g. a candidate that diverges early)."""

    def __init__(self, objective: SurrogateBenchmarkObjective) -> None:
        self.objective = objective
        self.fidelity = objective.fidelity

    def evaluate(self, encoding: tuple[int, ...], fidelity: str = "hi") -> Evaluation:
        if fidelity != "hi":
            raise RuntimeError("loss is NaN")
        return self.objective.evaluate(encoding, fidelity)

    def planned_cost(self, fidelity: str) -> float:
        return self.objective.planned_cost(fidelity)


def test_a_failed_low_fidelity_run_is_charged_its_fidelity_not_a_full_evaluation(space: NB301Space) -> None:
    strategy = SuccessiveHalving(space, NB301_EPOCHS, seed=0, eta=3, bracket_size=6, rungs="schedule")
    history = run_search(strategy, _BrokenAtLowFidelity(SurrogateBenchmarkObjective(space, NB301_EPOCHS)), budget=1)
    assert {e.status for e in history.evaluations} == {"failed"}
    assert [e.cost for e in history.evaluations[:6]] == pytest.approx([12 / 98] * 6)


def test_a_multi_fidelity_strategy_needs_an_objective_with_fidelities(nb201: NB201Space, table: TableObjective) -> None:
    strategy = Hyperband(nb201, FidelitySchedule(hi_epochs=200, lo_epochs=12), rungs="schedule")
    with pytest.raises(NASError, match=r"^Hyperband evaluates at the fidelities lo, hi, which this objective does not offer: .*no low-fidelity column"):
        run_search(strategy, table, budget=5)


def _compose(*overrides: str) -> object:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="benchmark", overrides=["benchmark=nb301", *overrides])


def test_a_peer_that_is_not_installed_is_named_with_its_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nas.benchmark import run_benchmark

    monkeypatch.setitem(sys.modules, "optuna", None)  # what an environment without Optuna shows
    cfg = _compose("seeds=1", "budget=1", "include=[optuna_tpe_hyperband]", "workers=1", f"output_dir={tmp_path}")
    with pytest.raises(NASError, match=r"^The peer 'optuna_tpe_hyperband' needs the optional dependency optuna, which is not installed: pip install 'optuna>=4'"):
        run_benchmark(cfg)  # type: ignore[arg-type]


def test_the_nb301_benchmark_reports_best_values_against_cost(tmp_path: Path) -> None:
    from nas.benchmark import run_benchmark

    cfg = _compose(
        "seeds=2", "budget=6", "include=[hyperband,random]", "workers=1", "cost_checkpoints=[1,6]", f"output_dir={tmp_path}",
        "agreement_epochs=[4,98]", "agreement_samples=2000",
    )
    results = run_benchmark(cfg)  # type: ignore[arg-type]
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["mode"] == "multifidelity" and set(payload["strategies"]) == {"hyperband", "random"}
    report = (tmp_path / "results.md").read_text()
    assert (tmp_path / "convergence.png").stat().st_size > 0 and "± " in report
    # The report opens with how each fidelity ranks random architectures like the full one.
    four, full = payload["fidelity_agreement"]
    assert full == {"fidelity": "98 epochs", "spearman": pytest.approx(1.0), "spearman_top_0.1": pytest.approx(1.0), "top_1pct_kept": 1.0}
    assert four["fidelity"] == "4 epochs" and four["spearman_top_0.1"] < four["spearman"] < 0.9 and four["top_1pct_kept"] < 0.5
    assert report.startswith("## How each cheaper fidelity ranks 2,000 random architectures") and "| 98 epochs | 1.00 | 1.00 | 100% |" in report
    for record in results["random"]:  # type: ignore[index]
        # Random search evaluates 98 epochs each time: one equivalent per evaluation.
        assert record.best_by_cost[0][0] == pytest.approx(1.0)
        assert record.full_evaluations == record.evaluations == 6
    for record in results["hyperband"]:  # type: ignore[index]
        trace = record.best_by_cost
        assert all(a[0] <= b[0] and a[1] < b[1] for a, b in zip(trace, trace[1:-1]))  # improvements only
        assert record.best_at["1"] is None  # Hyperband's first full evaluation ends its first bracket, at 3.6
        assert record.best_at["6"] == max(v for _, v in trace)
        assert record.evaluations > 121 and record.cost == pytest.approx(trace[-1][0])


def test_multi_fidelity_bo_learns_every_level_from_the_curves_of_longer_runs(space: NB301Space, tiny_ensemble: dict[str, object]) -> None:
    from functools import partial

    from nas.strategies import MultiFidelityBO
    from nas.surrogate.model import EnsembleSurrogate

    schedule = FidelitySchedule(hi_epochs=98, lo_epochs=4, levels=(12, 33), p=3, q=2, f=1)
    strategy = MultiFidelityBO(
        space, partial(EnsembleSurrogate, **tiny_ensemble), schedule, seed=0, pretraining="none", acquisition="pi",
        initial_points=3, pool_size=400, screen_head="hi", promotion="anywhere",
    )
    assert strategy.levels == ("lo", "12", "33", "hi")
    history = run_search(strategy, SurrogateBenchmarkObjective(space, schedule), budget=6)
    full = [t.encoding for t in history.trials if t.fidelity == "hi"]
    cheap = [t.encoding for t in history.trials if t.fidelity == "lo"]
    assert {t.fidelity for t in history.trials} == {"lo", "hi"} and len(full) >= 4
    # Every 98-epoch run reports its 12- and 33-epoch values: those heads learn for free.
    assert set(strategy.observations["12"]) == set(strategy.observations["33"]) == set(full)
    assert set(strategy.observations["lo"]) == set(cheap) | set(full)
    with pytest.raises(NASError, match="Unknown promotion 'best'"):
        MultiFidelityBO(space, partial(EnsembleSurrogate, **tiny_ensemble), schedule, pretraining="none", promotion="best")


def test_the_benchmark_resumes_from_its_journal_of_finished_seeds(tmp_path: Path) -> None:
    from nas.benchmark import run_benchmark

    first = run_benchmark(_compose("seeds=1", "budget=2", "include=[random]", "workers=1", f"output_dir={tmp_path}", "agreement_epochs=[]"))  # type: ignore[arg-type]
    again = run_benchmark(_compose("seeds=2", "budget=2", "include=[random]", "workers=1", f"output_dir={tmp_path}", "agreement_epochs=[]"))  # type: ignore[arg-type]
    assert [r.seed for r in again["random"]] == [0, 1]  # type: ignore[index]
    assert again["random"][0] == first["random"][0]  # type: ignore[index]  # read back, not run again
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 2
    other_budget = run_benchmark(_compose("seeds=1", "budget=3", "include=[random]", "workers=1", f"output_dir={tmp_path}", "agreement_epochs=[]"))  # type: ignore[arg-type]
    assert other_budget["random"][0].cost == pytest.approx(3.0)  # type: ignore[index]  # another budget is run anew


def test_fidelity_agreement_settings_are_checked_before_any_run(tmp_path: Path) -> None:
    from nas.benchmark import run_benchmark

    with pytest.raises(NASError, match=r"^agreement_epochs must be whole numbers of epochs 1\.\.98, got 99\.$"):
        run_benchmark(_compose("seeds=1", "budget=1", "include=[random]", "workers=1", f"output_dir={tmp_path}", "agreement_epochs=[4,99]"))  # type: ignore[arg-type]
    with pytest.raises(NASError, match=r"^agreement_epochs needs an objective that predicts any architecture at any epoch"):
        run_benchmark(_compose("seeds=1", "budget=1", "include=[random]", "workers=1", f"output_dir={tmp_path}", "objective=table", "searchspace=nb201", "agreement_epochs=[4]"))  # type: ignore[arg-type]
    assert not (tmp_path / "records.jsonl").exists()


def test_the_nb201_proxy_benchmark_charges_cheap_validation_runs_their_share(tmp_path: Path) -> None:
    from nas.benchmark import run_benchmark

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=["benchmark=nb201_proxy", "seeds=1", "budget=4", "include=[bo_multifidelity_schedule]", "workers=1", f"output_dir={tmp_path}"])
    (record,) = run_benchmark(cfg)["bo_multifidelity_schedule"]  # type: ignore[index]
    # The thesis' rule: one test-accuracy evaluation and five cheap validation-accuracy runs
    # per iteration; a cheap run costs 12/200 of a full one.
    cheap = record.evaluations - record.full_evaluations
    assert cheap >= 5 * (record.full_evaluations - 1) and record.full_evaluations >= 3
    assert record.cost == pytest.approx(record.full_evaluations + 0.06 * cheap)
