"""Priors (``initial=[...]``) evaluated first by any strategy, and twins never trained twice."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nas.errors import NASError
from nas.objectives.base import Evaluation
from nas.objectives.table import TableObjective
from nas.search import TWIN_OF, run_search
from nas.space import Encoding
from nas.spaces.nb201 import NB201Space
from nas.store import Store
from nas.strategies import BayesianOptimization, RandomSearch, RegularizedEvolution
from nas.strategies.base import Strategy
from nas.strategies.optuna_peer import OptunaStrategy
from nas.strategies.priors import NEAR_PRIOR, PRIOR, PriorsFirst, parse_priors, prior_origin
from nas.surrogate import EnsembleSurrogate

# The ResNet block: node 3 = x + conv(conv(x)).
RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
# Twins that compute the identity: node 3 reads only the input, so nodes 1 and 2 never
# reach the output (the first is the ResNet cell without its last edge).
IDENTITY_A = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"
IDENTITY_B = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
IDENTITY_C = "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|none~2|"


class CountingObjective:
    """The table's values, counting how often each encoding is really evaluated."""

    def __init__(self, table: TableObjective) -> None:
        self.table = table
        self.calls: list[Encoding] = []

    def evaluate(self, encoding: Encoding, fidelity: str = "hi") -> Evaluation:
        self.calls.append(tuple(encoding))
        return self.table.evaluate(encoding, fidelity)


class Scripted(Strategy):
    """Suggests a fixed list of encodings in order, ``batch`` at a time (ignoring twins on purpose)."""

    def __init__(self, space: NB201Space, script: list[Encoding], batch: int) -> None:
        super().__init__(space, 0)
        self.script, self.default_batch_size = list(script), batch

    def ask(self, n: int | None = None) -> list[Encoding]:
        out = [e for e in self.script if e not in self.seen and e not in self.pending][: n or self.default_batch_size]
        return self._mark_pending(out)


def _bo(space: NB201Space, tiny_ensemble: dict, seed: int = 0) -> BayesianOptimization:
    surrogate = EnsembleSurrogate(space, seed=seed, pretraining="none", **tiny_ensemble)
    return BayesianOptimization(space, surrogate, seed=seed, pretraining="none", batch_size=4, initial_points=4)


# --- twins ------------------------------------------------------------------------------


def test_the_twins_used_here_are_twins(nb201: NB201Space) -> None:
    codes = torch.tensor([nb201.parse(t) for t in (IDENTITY_A, IDENTITY_B, IDENTITY_C, RESNET)])
    keys = nb201.function_keys(codes).tolist()
    assert keys[0] == keys[1] == keys[2] != keys[3]


@pytest.mark.parametrize("batch", [1, 3])
def test_a_twin_is_never_evaluated_it_gets_its_twins_result_at_no_cost(nb201: NB201Space, table: TableObjective, batch: int, tmp_path: Path) -> None:
    other = nb201.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    script = [nb201.parse(t) for t in (IDENTITY_A, IDENTITY_B, RESNET, IDENTITY_C)] + [other]
    objective = CountingObjective(table)
    with Store(tmp_path / "store.sqlite", {"t": batch}) as store:
        history = run_search(Scripted(nb201, script, batch), objective, budget=3, store=store, reuse_twins=True)
    # IDENTITY_B (in the same batch as IDENTITY_A when batch=3) waits for it; neither it nor
    # IDENTITY_C is evaluated, and neither costs anything.
    assert objective.calls == [script[0], script[2], script[4]]
    assert sorted(history.encodings) == sorted(script) and history.cost == 3
    first = history.evaluations[0]
    twins = [e for t, e in zip(history.trials, history.evaluations) if t.encoding in (script[1], script[3])]
    for twin in twins:
        assert twin.value == first.value and twin.cost == 0.0 and twin.metrics[TWIN_OF] == 0
    assert history.best() is None or TWIN_OF not in history.best()[1].metrics  # the trained one wins ties
    # Without reuse, the same script trains every twin (the table lists them apart).
    plain = CountingObjective(table)
    run_search(Scripted(nb201, script, batch), plain, budget=5)
    assert plain.calls == script
    # A resumed search replays the reused results instead of evaluating anything.
    again = CountingObjective(table)
    with Store(tmp_path / "store.sqlite", {"t": batch}) as store:
        replayed = run_search(Scripted(nb201, script, batch), again, budget=3, store=store, reuse_twins=True)
    assert again.calls == [] and [e.value for e in replayed.evaluations] == [e.value for e in history.evaluations]


@pytest.mark.parametrize("name", ["random", "evolution", "bo"])
def test_strategies_that_skip_twins_never_suggest_one(name: str, nb201: NB201Space, table: TableObjective, tiny_ensemble: dict) -> None:
    def make(skip: bool) -> Strategy:
        strategy: Strategy = {
            "random": lambda: RandomSearch(nb201, 3),
            "evolution": lambda: RegularizedEvolution(nb201, 3, population_size=8, tournament_size=3),
            "bo": lambda: _bo(nb201, tiny_ensemble, 3),
        }[name]()
        strategy.skip_twins = skip
        return strategy

    objective = CountingObjective(table)
    history = run_search(make(True), objective, budget=24, reuse_twins=True)
    keys = nb201.function_keys(torch.tensor(history.encodings)).tolist()
    trained = nb201.function_keys(torch.tensor(objective.calls)).tolist()
    assert len(set(trained)) == len(trained) == 24  # no network trained twice
    if name != "evolution":  # evolution's mutations may hit a twin; the search answers it for free
        assert len(set(keys)) == len(keys)
    # The same strategies without the option do suggest twins (most cells of the space have some).
    unskipped = run_search(make(False), CountingObjective(table), budget=120)
    unskipped_keys = nb201.function_keys(torch.tensor(unskipped.encodings)).tolist()
    assert name == "bo" or len(set(unskipped_keys)) < len(unskipped_keys)


# --- priors -----------------------------------------------------------------------------


def test_priors_come_first_then_their_neighbours_then_the_strategy(nb201: NB201Space, table: TableObjective, tiny_ensemble: dict) -> None:
    priors = parse_priors(nb201, [RESNET, "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"])
    inner = _bo(nb201, tiny_ensemble)
    strategy = PriorsFirst(inner, priors, neighbours=3)
    history = run_search(strategy, table, budget=12)  # type: ignore[arg-type]
    assert history.encodings[:2] == priors
    for near in history.encodings[2:5]:
        assert min(sum(a != b for a, b in zip(near, p)) for p in priors) == 1
        assert prior_origin(strategy, near) == NEAR_PRIOR
    assert prior_origin(strategy, priors[0]) == PRIOR and prior_origin(strategy, history.encodings[-1]) is None
    assert len(set(history.encodings)) == 12
    # The wrapped strategy was told every result, the priors' included.
    assert inner.encodings[:2] == priors and len(inner.values) == 12
    assert strategy.predict(torch.tensor(priors)) is not None  # the rest is the wrapped strategy's


def test_optuna_learns_a_prior_as_a_trial_of_its_own(nb201: NB201Space, table: TableObjective) -> None:
    prior = nb201.parse(RESNET)
    strategy = PriorsFirst(OptunaStrategy(nb201, 0, "tpe"), [prior])
    run_search(strategy, table, budget=3)  # type: ignore[arg-type]
    first = strategy.study.trials[0]
    assert tuple(first.params[name] for name in nb201.variable_names) == prior
    assert math.isclose(first.value, table.evaluate(prior).value)


def test_bad_priors_are_one_sentence(nb201: NB201Space) -> None:
    with pytest.raises(NASError, match=r"The prior '\|conv~0\|' in initial is not a member of search space 'nb201': Malformed"):
        parse_priors(nb201, ["|conv~0|"])
    with pytest.raises(NASError, match="is given twice in initial; give each architecture once"):
        parse_priors(nb201, [RESNET, RESNET])
    with pytest.raises(NASError, match="initial_neighbours samples near the priors"):
        PriorsFirst(RandomSearch(nb201), [], neighbours=2)
    with pytest.raises(NASError, match="initial_neighbours is a number of architectures, 0 or more, got -1"):
        PriorsFirst(RandomSearch(nb201), [nb201.parse(RESNET)], neighbours=-1)


# --- through python -m nas.run -----------------------------------------------------------


def _run_config(*overrides: str):  # type: ignore[no-untyped-def]
    from hydra import compose, initialize_config_dir

    from tests.nas.tiny_runs import TINY_TRAINING

    configs = str(Path(__file__).resolve().parents[2] / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        return compose("config", overrides=[*TINY_TRAINING, *overrides])


def test_a_training_search_starts_from_its_priors_and_says_where_the_winner_came_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.run import run

    summary = run(_run_config(f"initial=[{RESNET!r}]", "initial_neighbours=2", "budget=5", f"output_dir={tmp_path}"))
    out = capsys.readouterr().out
    assert summary["evaluations"] == 5 and summary["winner_origin"] in (PRIOR, NEAR_PRIOR, None)
    assert ("one of the priors" in out) == (summary["winner_origin"] == PRIOR)
    assert "initial=1 priors" in out
    import sqlite3

    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        first = db.execute("SELECT architecture FROM evaluations ORDER BY batch, position").fetchone()[0]
    assert first == RESNET
    # The priors are part of the search's identity: a resumed search must have the same ones.
    with pytest.raises(NASError, match="differs in: initial"):
        run(_run_config(f"initial=[{IDENTITY_A!r}]", "initial_neighbours=2", "budget=5", f"output_dir={tmp_path}"))


def test_a_bad_prior_stops_the_run_before_anything_is_trained(tmp_path: Path) -> None:
    from nas.run import run

    with pytest.raises(NASError, match=r"is not a member of search space 'nb201'.*nor_conv_9x9"):
        run(_run_config("initial=['|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|']", f"output_dir={tmp_path}"))
    with pytest.raises(NASError, match="given twice in initial"):
        run(_run_config(f"initial=[{RESNET!r},{RESNET!r}]", f"output_dir={tmp_path}"))
    assert not (tmp_path / "store.sqlite").exists()
