"""Successive halving and Hyperband over the lo/hi fidelities of the NAS-Bench-201 table
(val_acc as the low-fidelity proxy)."""
from __future__ import annotations

import math

import pytest

from nas.errors import NASError
from nas.fidelity import FidelitySchedule
from nas.objectives import Evaluation, TableObjective
from nas.search import run_search
from nas.spaces.nb201 import NB201Space
from nas.strategies import Hyperband, SuccessiveHalving
from nas.strategies.base import Trial

TABLE = "package://nb201/cifar10.csv"
SCHEDULE = FidelitySchedule(hi_epochs=200, lo_epochs=12)


@pytest.fixture(scope="module")
def mf_table(nb201: NB201Space) -> TableObjective:
    return TableObjective(nb201, TABLE, "test_acc", low_fidelity_column="val_acc")


def _evaluate(objective: TableObjective, trials: list[Trial]) -> list[Evaluation]:
    return [objective.evaluate(t.encoding, t.fidelity) for t in trials]


def _lo_value(objective: TableObjective, space: NB201Space, enc: tuple[int, ...]) -> float:
    return float(objective.low_values[int(space.index_of(space.all_codes.new_tensor([enc]))[0])])  # type: ignore[index]


@pytest.mark.parametrize("bracket_size, eta", [(9, 3), (10, 3), (16, 4), (7, 2)])
def test_a_rung_promotes_exactly_its_top_one_over_eta(nb201: NB201Space, mf_table: TableObjective, bracket_size: int, eta: int) -> None:
    strategy = SuccessiveHalving(nb201, SCHEDULE, rungs="schedule", seed=1, eta=eta, bracket_size=bracket_size)
    rung = strategy.propose()
    assert [t.fidelity for t in rung] == ["lo"] * bracket_size
    strategy.observe(rung, _evaluate(mf_table, rung))
    promoted = strategy.propose()
    ranked = sorted((t.encoding for t in rung), key=lambda enc: -_lo_value(mf_table, nb201, enc))
    assert [t.encoding for t in promoted] == ranked[: bracket_size // eta]
    assert {t.fidelity for t in promoted} == {"hi"}
    strategy.observe(promoted, _evaluate(mf_table, promoted))
    assert strategy.best == max(((t.encoding, float(mf_table.evaluate(t.encoding).value)) for t in promoted), key=lambda b: b[1])
    # The bracket is over: the next one draws new architectures at low fidelity.
    following = strategy.propose()
    assert {t.fidelity for t in following} == {"lo"}
    assert not {t.encoding for t in following} & {t.encoding for t in rung}


def test_failures_are_never_promoted(nb201: NB201Space) -> None:
    strategy = SuccessiveHalving(nb201, SCHEDULE, rungs="schedule", seed=0, eta=3, bracket_size=6)
    rung = strategy.propose()
    values = [math.nan, 70.0, math.nan, math.nan, 60.0, math.nan]
    strategy.observe(rung, [Evaluation(math.nan, cost=0.06, status="failed") if math.isnan(v) else Evaluation(v, cost=0.06) for v in values])
    # 6 // 3 = 2 promotions: the two successes, best first, none of the failures.
    assert [t.encoding for t in strategy.propose()] == [rung[1].encoding, rung[4].encoding]
    all_failed = SuccessiveHalving(nb201, SCHEDULE, rungs="schedule", seed=0, eta=3, bracket_size=3)
    rung = all_failed.propose()
    all_failed.observe(rung, [Evaluation(math.nan, cost=0.06, status="failed")] * 3)
    assert {t.fidelity for t in all_failed.propose()} == {"lo"}  # the bracket closed without a full evaluation


def test_hyperband_cycles_its_brackets(nb201: NB201Space, mf_table: TableObjective) -> None:
    strategy = Hyperband(nb201, SCHEDULE, rungs="schedule", seed=0, eta=3, bracket_size=9)
    assert [strategy.bracket_plan(i) for i in range(4)] == [(0, 9), (1, 6), (0, 9), (1, 6)]
    history = run_search(strategy, mf_table, budget=19)
    fidelities = "".join("l" if t.fidelity == "lo" else "h" for t in history.trials)
    # Bracket s=1: 9 partial, then the best 3 in full; bracket s=0: 6 full evaluations; again.
    assert fidelities == ("l" * 9 + "h" * 3 + "h" * 6) * 2
    assert history.cost == pytest.approx(2 * (9 * 0.06 + 3 + 6))
    pairs = [(t.encoding, t.fidelity) for t in history.trials]
    assert len(set(pairs)) == len(pairs)
    first_rung = history.trials[:9]
    ranked = sorted((t.encoding for t in first_rung), key=lambda enc: -_lo_value(mf_table, nb201, enc))
    assert [t.encoding for t in history.trials[9:12]] == ranked[:3]


def test_waiting_rungs_open_new_brackets_and_released_trials_return(nb201: NB201Space, mf_table: TableObjective) -> None:
    strategy = SuccessiveHalving(nb201, SCHEDULE, rungs="schedule", seed=0, eta=3, bracket_size=6)
    first = strategy.propose(4)
    rest = strategy.propose()
    assert len(first) == 4 and len(rest) == 2 and len(strategy.brackets) == 1
    parallel = strategy.propose()  # the first bracket waits for results: a second one starts
    assert len(strategy.brackets) == 2 and len(parallel) == 6
    assert not {t.encoding for t in parallel} & {t.encoding for t in first + rest}
    strategy.release(parallel[4:])
    assert strategy.propose() == parallel[4:]
    strategy.observe(first + rest, _evaluate(mf_table, first + rest))
    assert {t.fidelity for t in strategy.propose()} == {"hi"}


def test_same_seed_same_proposals(nb201: NB201Space, mf_table: TableObjective) -> None:
    runs = [run_search(Hyperband(nb201, SCHEDULE, rungs="schedule", seed=s, bracket_size=9), mf_table, budget=10).trials for s in (2, 2, 3)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_bad_hyperband_settings(nb201: NB201Space) -> None:
    with pytest.raises(NASError, match="eta must be at least 2"):
        Hyperband(nb201, SCHEDULE, rungs="schedule", eta=1)
    with pytest.raises(NASError, match="bracket_size must be a positive"):
        SuccessiveHalving(nb201, SCHEDULE, rungs="schedule", bracket_size=0)
    with pytest.raises(NASError, match="needs a schedule with lo_epochs"):
        Hyperband(nb201, FidelitySchedule(hi_epochs=3))


def test_model_based_hyperband_keeps_the_brackets_and_fills_them_by_acquisition(nb201: NB201Space, mf_table: TableObjective) -> None:
    """BOHB with the ensemble: the same brackets, rungs and promotions as Hyperband; once a rung
    has min_points observations, new brackets come from the surrogate, and their cheap results
    beat random brackets'."""
    from nas.strategies import ModelBasedHyperband
    from nas.surrogate.model import EnsembleSurrogate

    model = ModelBasedHyperband(nb201, EnsembleSurrogate, SCHEDULE, rungs="schedule", seed=0, eta=3, bracket_size=9, min_points=9, random_fraction=0.0)
    plain = Hyperband(nb201, SCHEDULE, rungs="schedule", seed=0, eta=3, bracket_size=9)
    first = model.propose()
    assert [(t.encoding, t.fidelity) for t in first] == [(t.encoding, t.fidelity) for t in plain.propose()]  # random until a rung is modelled
    assert model.model_level() is None
    model.observe(first, _evaluate(mf_table, first))
    assert model.model_level() == "lo"
    cheap: dict[str, list[float]] = {"model": [], "random": []}
    for strategy, key in ((model, "model"), (plain, "random")):
        if strategy is plain:
            plain.observe(first, _evaluate(mf_table, first))
        for _ in range(6):
            trials = strategy.propose()
            strategy.observe(trials, _evaluate(mf_table, trials))
            cheap[key] += [_lo_value(mf_table, nb201, t.encoding) for t in trials if t.fidelity == "lo"]
    assert len(cheap["model"]) == len(cheap["random"])  # the same bracket plan
    assert sum(cheap["model"]) / len(cheap["model"]) > sum(cheap["random"]) / len(cheap["random"]) + 1.5  # measured: 85.4 against 82.5
    with pytest.raises(NASError, match="random_fraction is the share of each bracket drawn at random, between 0 and 1, got 2"):
        ModelBasedHyperband(nb201, EnsembleSurrogate, SCHEDULE, rungs="schedule", random_fraction=2)
