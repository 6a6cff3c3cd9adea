"""The external peers (SMAC's two facades, Optuna's TPE with Hyperband, Optuna's TPE and GP
strategies) on a mixed space: real numbers with log scales and a condition, proposals that
are valid members, and searches that learn from the values they are told."""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from nas.bench import mf_peers
from nas.bench.mf_peers import CostTracker, run_peer
from nas.fidelity import HIGH_FIDELITY, FidelitySchedule, TrainedEpochs
from nas.search import run_search
from nas.space import Encoding
from nas.spaces.hparams import Categorical, Float, Integer, MixedSpace
from nas.strategies.optuna_peer import OptunaStrategy, trial_params
from nas.trial import Evaluation

EPOCHS = 9
BUDGET = 24


class RecordingSpace(MixedSpace):
    """A mixed space that keeps the parameters of every Optuna trial it suggests through."""

    suggested: list[dict[str, Any]]

    def suggest(self, trial: Any) -> Encoding:
        encoding = super().suggest(trial)
        self.suggested.append(dict(trial.params))
        return encoding


def _space() -> RecordingSpace:
    space = RecordingSpace([
        Float("lr", 1e-4, 0.1, log=True),
        Integer("layers", 1, 8),
        Categorical("optimizer", ["adam", "sgd"]),
        Float("momentum", 0.0, 0.99, when={"optimizer": ["sgd"]}),
    ], label="toy")
    space.suggested = []
    return space


def quality(config: dict[str, object]) -> float:
    """100 at lr = 10^-2.5, 5 layers, sgd with momentum 0.9; smooth, in % (at least 0)."""
    lr, layers = float(config["lr"]), int(config["layers"])  # type: ignore[arg-type]
    penalty = 10 * (math.log10(lr) + 2.5) ** 2 + 3 * (layers - 5) ** 2
    penalty += 30 * (float(config["momentum"]) - 0.9) ** 2 if config["optimizer"] == "sgd" else 6.0  # type: ignore[arg-type]
    return max(0.0, 100.0 - penalty)


class Analytic:
    """:func:`quality` of a configuration after ``e`` of :data:`EPOCHS` epochs (rising to it,
    ranks kept), continuing runs: an evaluation pays only the epochs not run before."""

    continuation = True

    def __init__(self, space: MixedSpace) -> None:
        self.space = space
        self.schedule = FidelitySchedule(hi_epochs=EPOCHS)
        self.trained = TrainedEpochs()
        self.evaluated: list[tuple[Encoding, str]] = []

    def evaluate(self, encoding: Encoding, fidelity: str = HIGH_FIDELITY) -> Evaluation:
        encoding = tuple(encoding)
        assert bool(self.space.valid_mask(torch.tensor([encoding]))[0]), f"not a member: {encoding}"
        self.evaluated.append((encoding, fidelity))
        epochs = self.schedule.epochs(fidelity)
        value = quality(self.space.describe(encoding)) * (0.6 + 0.4 * epochs / EPOCHS)
        return Evaluation(value, cost=self.trained.charge(encoding, epochs) / EPOCHS)


@pytest.fixture(scope="module")
def random_quantiles() -> tuple[float, float]:
    """The median and upper quartile of :func:`quality` over uniform random configurations."""
    space = _space()
    values = sorted(quality(space.describe(tuple(row))) for row in space.sample(4000, torch.Generator().manual_seed(0)).tolist())
    return values[len(values) // 2], values[3 * len(values) // 4]


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every configuration the SMAC peers hand over, as SMAC wrote it."""
    seen: list[dict[str, Any]] = []
    encode = mf_peers._encoding_of

    def recording(space: Any, config: dict[str, Any]) -> Encoding:
        seen.append(dict(config))
        return encode(space, config)

    monkeypatch.setattr(mf_peers, "_encoding_of", recording)
    yield seen


def _assert_real_values_and_conditions(configs: list[dict[str, Any]], coded: bool = False) -> None:
    """Real numbers on their ranges (not grid codes), and ``momentum`` set exactly when active
    (``coded``: the categorical is suggested by its code, as :meth:`MixedSpace.suggest` does)."""
    assert configs
    for config in configs:
        if coded:
            config = {**config, "optimizer": ("adam", "sgd")[config["optimizer"]]}
        assert isinstance(config["lr"], float) and 1e-4 <= config["lr"] <= 0.1
        assert isinstance(config["layers"], int) and 1 <= config["layers"] <= 8
        assert config["optimizer"] in ("adam", "sgd")
        assert ("momentum" in config) == (config["optimizer"] == "sgd"), config
        if "momentum" in config:
            assert isinstance(config["momentum"], float) and 0.0 <= config["momentum"] <= 0.99
    # Log scale: a uniform sampler on the linear scale would almost never go below 1e-3.
    assert sum(c["lr"] < 1e-3 for c in configs) >= 2


def _assert_learns(values: list[float], upper_quartile: float) -> None:
    """The later half of a search's full evaluations is mostly better than three random
    configurations out of four (a search that ignores its values has a median there with
    odds well under 10 %)."""
    later = values[len(values) // 2 :]
    assert len(later) >= 4, values
    assert statistics.median(later) > upper_quartile, (later, upper_quartile)


def _run_peer(name: str, options: dict[str, Any]) -> tuple[RecordingSpace, Analytic, list[float]]:
    space = _space()
    objective = Analytic(space)
    tracker = CostTracker(objective, objective.schedule, BUDGET)
    started = time.perf_counter()
    events = run_peer(name, space, tracker, 0, options)
    print(f"{name}: {len(events)} evaluations in {time.perf_counter() - started:.1f} s")
    assert tracker.spent >= BUDGET
    full = [value for _, value, _ in events if value is not None]
    return space, objective, full


@pytest.mark.parametrize("name, options", [("smac_hpo", {}), ("smac_mf", {"min_budget": 1, "eta": 3})])
def test_smac_sees_real_numbers_with_conditions_and_learns(name: str, options: dict[str, Any], configs: list[dict[str, Any]], random_quantiles: tuple[float, float]) -> None:
    pytest.importorskip("smac")
    space, objective, full = _run_peer(name, options)
    _assert_real_values_and_conditions(configs)
    if name == "smac_hpo":
        assert {fidelity for _, fidelity in objective.evaluated} == {HIGH_FIDELITY}
        assert len(set(objective.evaluated)) == len(objective.evaluated)  # a known configuration is not evaluated again
    else:
        assert len({fidelity for _, fidelity in objective.evaluated}) > 1
    assert max(full) > random_quantiles[0]
    _assert_learns(full, random_quantiles[1])


def test_optuna_tpe_hyperband_suggests_real_numbers_with_conditions_and_learns(random_quantiles: tuple[float, float]) -> None:
    pytest.importorskip("optuna")
    space, objective, full = _run_peer("optuna_tpe_hyperband", {})
    _assert_real_values_and_conditions(space.suggested, coded=True)
    assert max(full) > random_quantiles[0]
    _assert_learns(full, random_quantiles[1])


@pytest.mark.parametrize("sampler, budget", [("tpe", 60), ("gp", BUDGET)])  # TPE starts with 10 random trials, and is fast
def test_optuna_strategy_suggests_real_numbers_with_conditions_and_learns(sampler: str, budget: int, random_quantiles: tuple[float, float]) -> None:
    pytest.importorskip("optuna")
    space = _space()
    objective = Analytic(space)
    strategy = OptunaStrategy(space, seed=0, sampler=sampler)
    started = time.perf_counter()
    history = run_search(strategy, objective, budget=budget)
    print(f"optuna {sampler}: {len(history.evaluations)} evaluations in {time.perf_counter() - started:.1f} s")
    assert len(set(history.encodings)) == len(history.encodings) == budget
    _assert_real_values_and_conditions(space.suggested, coded=True)
    distributions = strategy.study.trials[-1].distributions
    assert type(distributions["lr"]).__name__ == "FloatDistribution" and distributions["lr"].log
    assert type(distributions["layers"]).__name__ == "IntDistribution"
    values = [e.value for e in history.evaluations]
    assert max(values) > random_quantiles[0]
    _assert_learns(values, random_quantiles[1])


def test_an_encoding_enqueued_in_optuna_comes_back_as_itself() -> None:
    """A member chosen outside the study (a prior, or the random fill-up) is enqueued as the
    values the space suggests, and the study's trial is that member."""
    optuna = pytest.importorskip("optuna")
    space = _space()
    rows = space.sample(20, torch.Generator().manual_seed(3)).tolist()
    strategy = OptunaStrategy(space, seed=0, sampler="tpe")
    for row in rows:
        encoding = tuple(row)
        params = trial_params(space, encoding)
        assert params == space.describe(encoding) | ({"optimizer": encoding[2]})  # a categorical is suggested by its code
        strategy.answer(encoding, quality(space.describe(encoding)))
    assert len(strategy.study.trials) == len(rows)
    assert [space.suggest(optuna.trial.FixedTrial(t.params)) for t in strategy.study.trials] == [tuple(r) for r in rows]


def test_smac_output_is_a_temporary_directory_removed_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("smac")
    import smac

    made: list[Path] = []
    scenario = smac.Scenario

    def recording(*args: Any, **kwargs: Any) -> Any:
        made.append(Path(kwargs["output_directory"]))
        assert made[-1].is_dir()
        return scenario(*args, **kwargs)

    monkeypatch.setattr(smac, "Scenario", recording)
    space = _space()
    objective = Analytic(space)
    run_peer("smac_hpo", space, CostTracker(objective, objective.schedule, 2), 0, {})
    run_peer("smac_mf", space, CostTracker(objective, objective.schedule, 1), 0, {})
    assert len(made) == 2 and made[0] != made[1]
    assert not any(path.exists() for path in made)
