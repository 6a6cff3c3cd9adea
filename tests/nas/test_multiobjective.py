"""Goals, Pareto utilities, cost tables and front / budget searches on the NAS-Bench-201 table."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nas.bench.multiobjective import FrontTruth, run_front_benchmark
from nas.benchmark import run_benchmark
from nas.costs.columns import load_columns
from nas.costs.flops import cost_classes, network_costs
from nas.errors import NASError
from nas.acquisition.goals import Goals
from nas.paths import resolve_path
from nas.acquisition.multiobjective import inverse_copula, probability_of_front_improvement, select_front_batch
from nas.acquisition.pareto import crowding_distance, hypervolume, hypervolume_improvement_2d, non_dominated, non_dominated_ranks
from nas.spaces.nb201 import NB201Space
from nas.strategies.multiobjective import KnownCosts, MultiObjectiveBO, MultiObjectiveRandom, NSGA2Evolution, OptunaMultiObjective

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")
TABLES = ["package://nb201/cifar10.csv", "package://nb201/costs.csv"]
FAST_ENSEMBLE = ["ensemble.trunk=[32,32]", "ensemble.head_hidden=32", "ensemble.members=3"]
#: The shipped ensemble's settings (configs/ensemble/default.yaml), fewer members.
FAST_SURROGATE: dict[str, object] = dict(
    members=4, trunk=(64, 128, 128), head_hidden=128, batch_size=32, fit_epochs=20, pretrain_epochs=10,
    pretrain_batch_size=64, auxiliary_weight=1.0, head_init="best_metric", max_fit_steps=60,
)


# ---------------------------------------------------------------------- goals
def test_goals_parse_directions_budgets_and_known_columns() -> None:
    goals = Goals.parse(["accuracy:max", "latency_ms:min"], {"latency_ms": 5.0, "params_m": 3}, ["params_m"])
    assert goals.names == ("accuracy", "latency_ms") and goals.columns == ("accuracy", "latency_ms", "params_m")
    assert goals.signs.tolist() == [1.0, -1.0] and goals.multi_objective
    assert [str(c) for c in goals.constraints] == ["latency_ms<=5", "params_m<=3"]
    cli = Goals.parse("test_acc", ["flops_m<=16", "test_acc >= 50"])
    assert cli.objectives[0].direction == "max" and [str(c) for c in cli.constraints] == ["flops_m<=16", "test_acc>=50"]
    feasible = cli.feasible({"flops_m": torch.tensor([10.0, 20.0, 10.0]), "test_acc": torch.tensor([60.0, 90.0, 40.0])})
    assert feasible.tolist() == [True, False, False]
    assert goals.oriented(torch.tensor([[90.0, 2.0]])).tolist() == [[90.0, -2.0]]


@pytest.mark.parametrize(
    ("objectives", "constraints", "message"),
    [
        (["test_acc:maximize"], None, "direction 'maximize'; a direction is max or min"),
        (["test_acc:max", "test_acc:min"], None, "name a column twice"),
        ([], None, "at least one objective"),
        (["test_acc:max"], ["flops_m<five"], "not of the form name<=number"),
    ],
)
def test_malformed_goals_are_one_sentence(objectives: list[str], constraints: list[str] | None, message: str) -> None:
    with pytest.raises(NASError, match=message):
        Goals.parse(objectives, constraints)


def test_goals_on_missing_columns_and_unsatisfiable_budgets_are_refused() -> None:
    goals = Goals.parse(["test_acc:max", "latency_ms:min"])
    with pytest.raises(NASError, match="has no column or metric 'latency_ms'; valid ones are test_acc, flops_m"):
        goals.validate(["test_acc", "flops_m"])
    budget = Goals.parse(["test_acc:max"], ["flops_m<=1"])
    with pytest.raises(NASError, match=r"No member of the space satisfies flops_m<=1 \(best member: 15.5661\)"):
        budget.check_satisfiable({"flops_m": torch.tensor([15.5661, 40.0])})


# ---------------------------------------------------------------------- Pareto utilities
def _brute_force_front(points: torch.Tensor) -> list[bool]:
    return [not any(bool((q >= p).all() and (q > p).any()) for q in points) for p in points]


def _brute_force_hypervolume(points: torch.Tensor, reference: torch.Tensor) -> float:
    """Exact volume of the union of boxes, cell by cell of the grid of every coordinate."""
    axes = [sorted({float(reference[j]), *(v for v in points[:, j].tolist() if v > reference[j])}) for j in range(points.shape[1])]
    total = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        low = torch.tensor([axes[j][i] for j, i in enumerate(cell)], dtype=torch.float64)
        high = torch.tensor([axes[j][i + 1] for j, i in enumerate(cell)], dtype=torch.float64)
        if bool((points >= high).all(1).any()):
            total += float((high - low).prod())
    return total


@pytest.mark.parametrize("objectives", [2, 3])
def test_front_and_hypervolume_match_brute_force(objectives: int) -> None:
    generator = torch.Generator().manual_seed(objectives)
    points = torch.rand(25, objectives, generator=generator, dtype=torch.float64).round(decimals=1)  # ties on purpose
    assert non_dominated(points).tolist() == _brute_force_front(points)
    reference = torch.full((objectives,), 0.05, dtype=torch.float64)
    assert hypervolume(points, reference) == pytest.approx(_brute_force_hypervolume(points, reference), rel=1e-12)
    ranks = non_dominated_ranks(points)
    assert bool((ranks == 0).eq(non_dominated(points)).all())
    later = points[ranks == 1]
    assert bool(non_dominated(later).all()) and later.shape[0] > 0


def test_hypervolume_improvement_is_the_difference_of_hypervolumes() -> None:
    generator = torch.Generator().manual_seed(1)
    front = torch.rand(12, 2, generator=generator, dtype=torch.float64)
    candidates = torch.rand(3, 40, 2, generator=generator, dtype=torch.float64)  # leading sample dimension
    reference = torch.tensor([0.1, 0.0], dtype=torch.float64)
    gains = hypervolume_improvement_2d(candidates, front, reference)
    base = hypervolume(front, reference)
    for s, i in [(0, 0), (1, 7), (2, 39), (2, 11)]:
        expected = hypervolume(torch.cat([front, candidates[s, i : i + 1]]), reference) - base
        assert float(gains[s, i]) == pytest.approx(expected, abs=1e-12)
    dominated = front[non_dominated(front)][:1] - 0.01
    assert float(hypervolume_improvement_2d(dominated, front, reference)[0]) == 0.0


def test_probability_of_front_improvement_is_the_share_of_undominated_samples() -> None:
    """The exact two-objective staircase formula agrees with counting samples that no front
    point dominates; a known column (std 0) is a point mass, so a candidate that ties a
    front point's cost must beat that point's accuracy."""
    generator = torch.Generator().manual_seed(3)
    front = torch.rand(7, 2, generator=generator, dtype=torch.float64)
    mean = torch.rand(50, 2, generator=generator, dtype=torch.float64)
    std = 0.2 * torch.rand(50, 2, generator=generator, dtype=torch.float64)
    std[:10, 1] = 0.0  # known cost for the first ten
    mean[:5, 1] = front[:5, 1]  # ... of which five tie a front point's cost exactly
    exact = probability_of_front_improvement(mean, std, front)
    samples = mean + std * torch.randn(20_000, 50, 2, generator=generator, dtype=torch.float64)
    dominated = (front.view(1, 1, -1, 2) >= samples.unsqueeze(2)).all(-1).any(-1)
    assert torch.allclose(exact, (~dominated).double().mean(0), atol=0.015)
    noise = torch.randn(20_000, 50, 2, generator=generator, dtype=torch.float64)[..., [0, 1, 1]]
    three = probability_of_front_improvement(mean[:, [0, 1, 1]], std[:, [0, 1, 1]], front[:, [0, 1, 1]], noise)
    assert torch.allclose(three, exact, atol=0.015)  # a repeated objective (same draws) changes nothing
    assert float(probability_of_front_improvement(front[non_dominated(front)], torch.zeros(1, 2, dtype=torch.float64), front).max()) == 0.0


def test_crowding_gives_the_extremes_infinite_distance() -> None:
    front = torch.tensor([[0.0, 1.0], [0.2, 0.8], [0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    distance = crowding_distance(front)
    assert torch.isinf(distance[[0, 3]]).all() and distance[2] > distance[1]


def test_batch_spreads_along_the_front() -> None:
    """Four candidates near one knee and one far along the front: the believer moves the
    second pick away from the first pick's near-copies."""
    mean = torch.tensor([[1.0, 0.0], [0.99, 0.0], [0.98, 0.01], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    std = torch.zeros_like(mean)
    front = torch.tensor([[0.9, -0.1], [-0.1, 0.9]], dtype=torch.float64)
    picks = select_front_batch(mean, std, front, torch.tensor([-1.0, -1.0]), 2, torch.zeros(5, dtype=torch.bool), draws=4)
    assert picks.tolist()[0] in (0, 3, 4) and len(set(picks.tolist()) & {0, 1, 2}) <= 1
    # Alternating EHVI and PFI slots still pick distinct candidates.
    picks = select_front_batch(mean, std, front, torch.tensor([-1.0, -1.0]), 4, torch.zeros(5, dtype=torch.bool), acquisition="ehvi_pfi", draws=4)
    assert len(set(picks.tolist())) == 4
    # Beyond two objectives the EHVI slots become ParEGO slots.
    three = torch.cat([mean, mean[:, :1]], 1)
    picks = select_front_batch(three, torch.full_like(three, 0.1), torch.cat([front, front[:, :1]], 1), torch.full((3,), -1.0), 3, torch.zeros(5, dtype=torch.bool), acquisition="ehvi_pfi", draws=8)
    assert len(set(picks.tolist())) == 3


# ---------------------------------------------------------------------- tables
def test_cost_classes_give_the_costs_of_networks_built_one_by_one(nb201: NB201Space) -> None:
    """Members of one class (the same operations on other edges) cost the same; the shipped
    table holds the costs of networks built member by member."""
    classes = cost_classes(nb201, nb201.all_codes)
    assert int(classes.unique().numel()) == 210
    picks = [1234, 9876]
    twins = [int(torch.nonzero(classes == classes[i]).flatten()[-1]) for i in picks]
    assert twins != picks  # a different member of the same class
    built = network_costs(nb201, nb201.all_codes[picks + twins])
    assert torch.allclose(built[:2], built[2:])
    shipped = load_columns(nb201, ["package://nb201/costs.csv"])
    table = torch.stack([shipped["flops_m"], shipped["params_m"]], 1)[picks]
    assert torch.allclose(table, built[:2], atol=1e-6)
    assert float(shipped["flops_m"].min()) == pytest.approx(15.56608) and int(shipped["flops_m"].unique().numel()) == 28


def test_tables_join_on_arch_and_skip_text_columns(nb201: NB201Space, tmp_path: Path) -> None:
    columns = load_columns(nb201, TABLES)
    assert set(columns) == {"test_acc", "val_acc", "flops_m", "params_m"}  # val_acc_seeds is text
    assert float(columns["test_acc"].max()) == pytest.approx(94.3733)
    partial = tmp_path / "latency.csv"
    partial.write_text("arch,latency_ms\n" + nb201.to_string(tuple(nb201.all_codes[5].tolist())) + ",3.5\n")
    latency = load_columns(nb201, [partial])["latency_ms"]
    assert float(latency[5]) == 3.5 and int(torch.isnan(latency).sum()) == nb201.size - 1
    (tmp_path / "bad.csv").write_text("architecture,x\n")
    with pytest.raises(NASError, match="has no 'arch' column; its columns are architecture, x"):
        load_columns(nb201, [tmp_path / "bad.csv"])


# ---------------------------------------------------------------------- strategies
def _run(strategy, table: torch.Tensor, space: NB201Space, budget: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    evaluated: list[int] = []
    while len(evaluated) < budget:
        encodings = strategy.ask(None)[: budget - len(evaluated)]
        index = space.index_of(torch.tensor(encodings, dtype=torch.long))
        assert len(set(index.tolist()) & set(evaluated)) == 0  # never twice
        strategy.tell(encodings, table[index].tolist())
        evaluated += index.tolist()
    return torch.tensor(evaluated)


@pytest.fixture(scope="module")
def columns(nb201: NB201Space) -> dict[str, torch.Tensor]:
    return load_columns(nb201, TABLES)


def test_a_twin_of_each_front_point_finds_the_front_by_function_only(nb201: NB201Space, columns: dict[str, torch.Tensor]) -> None:
    truth = FrontTruth(nb201, columns, Goals.parse(["test_acc:max", "flops_m:min"]))
    keys = nb201.function_keys(nb201.all_codes)
    rows = [tuple(r) for r in truth.points.tolist()]
    front_rows = [i for i, r in enumerate(rows) if r in truth.front_keys]
    # For every front point whose cell has a twin (same function, same FLOPs), evaluate the twin only.
    twins = [j for i in front_rows for j in torch.nonzero((keys == keys[i]) & (columns["flops_m"] == columns["flops_m"][i])).flatten().tolist() if rows[j] not in truth.front_keys][:1000]
    index = torch.tensor(sorted(set(twins)), dtype=torch.long)
    with_twins = {rows[i] for i in front_rows if any(int(keys[j]) == int(keys[i]) and float(columns["flops_m"][j]) == float(columns["flops_m"][i]) for j in index.tolist())}
    assert 0 < len(with_twins) < len(truth.front_keys)
    assert truth.score(index)[1] == 0.0  # not one front point itself
    assert truth.share_by_twins(index) == pytest.approx(len(with_twins) / len(truth.front_keys))
    # The table's best, 94.3733 %, is reached by two cells that compute different functions: not twins.
    best = FrontTruth(nb201, columns, Goals.parse(["test_acc:max"], ["flops_m<=400"]))
    assert int(best.optimum_twins.sum()) == 2 and best.twins[best.optimum_twins].unique().numel() == 2


@pytest.mark.slow
def test_ensemble_bo_finds_more_of_the_front_than_random(nb201: NB201Space, columns: dict[str, torch.Tensor]) -> None:
    """The product's setting (FLOPs known, the shipped zero-cost pretraining), on the same seeds."""
    from nas.surrogate.model import EnsembleSurrogate
    from nas.costs.zero_cost import ZeroCostData

    zero_cost = ZeroCostData.load(resolve_path("package://nb201/zero_cost.safetensors"), nb201)
    goals = Goals.parse(["test_acc:max", "flops_m:min"], known=["flops_m"])
    truth = FrontTruth(nb201, columns, goals)
    table = torch.stack([columns[n] for n in goals.columns], 1)
    known = KnownCosts(nb201, {"flops_m": columns["flops_m"]})
    scores: dict[str, list[tuple[float, float]]] = {"bo": [], "random": []}
    for seed in (0, 1):
        factory = lambda **kw: EnsembleSurrogate(**{**FAST_SURROGATE, **kw})  # noqa: E731
        bo = MultiObjectiveBO(nb201, factory, seed, goals, known, batch_size=10, initial_points=10, draws=16)
        bo.pretrain(zero_cost)
        scores["bo"].append(truth.score(_run(bo, table, nb201, 60)))
        scores["random"].append(truth.score(_run(MultiObjectiveRandom(nb201, seed, goals, known), table, nb201, 60)))
    ratio = {name: sum(r for r, _ in runs) / len(runs) for name, runs in scores.items()}
    assert ratio["bo"] > ratio["random"] + 0.003, scores


@pytest.mark.parametrize("objectives", [["test_acc:max", "flops_m:min"], ["test_acc:max"]])
def test_twins_of_evaluated_members_are_never_proposed(nb201: NB201Space, columns: dict[str, torch.Tensor], tiny_ensemble: dict[str, object], objectives: list[str]) -> None:
    from nas.surrogate.model import EnsembleSurrogate

    goals = Goals.parse(objectives, ["flops_m<=24"] if len(objectives) == 1 else None, ["flops_m"])
    known = KnownCosts(nb201, {"flops_m": columns["flops_m"]})
    table = torch.stack([columns[n] for n in goals.columns], 1)
    factory = lambda **kw: EnsembleSurrogate(**{**tiny_ensemble, **kw})  # noqa: E731
    twins = torch.stack([nb201.function_keys(nb201.all_codes).double(), columns["flops_m"]], 1)
    for skip in (True, False):
        strategy = MultiObjectiveBO(nb201, factory, 0, goals, known, pretraining="none", initial_points=10, batch_size=10, skip_twins=skip)
        evaluated = _run(strategy, table, nb201, 60)
        distinct = torch.unique(twins[evaluated], dim=0).shape[0]
        if skip:
            assert distinct == 60
        else:
            assert distinct < 60  # without it, the cheap levels' twins are proposed (the case the option exists for)


def test_known_budgets_are_never_proposed(nb201: NB201Space, columns: dict[str, torch.Tensor], tiny_ensemble: dict[str, object]) -> None:
    from nas.surrogate.model import EnsembleSurrogate

    goals = Goals.parse(["test_acc:max"], ["flops_m<=16"], ["flops_m"])
    known = KnownCosts(nb201, {"flops_m": columns["flops_m"]})
    table = torch.stack([columns[n] for n in goals.columns], 1)
    feasible = columns["flops_m"] <= 16
    factory = lambda **kw: EnsembleSurrogate(**{**tiny_ensemble, **kw})  # noqa: E731
    for strategy in (
        MultiObjectiveBO(nb201, factory, 0, goals, known, pretraining="none", initial_points=5),
        NSGA2Evolution(nb201, 0, goals, known, population_size=10),
        MultiObjectiveRandom(nb201, 0, goals, known),
    ):
        evaluated = _run(strategy, table, nb201, 30)
        assert bool(feasible[evaluated].all()), type(strategy).__name__
    with pytest.raises(NASError, match="use hypervolume_scale=copula"):
        MultiObjectiveBO(nb201, factory, 0, Goals.parse(["test_acc:max", "flops_m:min"]), acquisition="ehvi_pfi", hypervolume_scale="minmax")
    with pytest.raises(NASError, match="Unknown multi-objective acquisition 'kg'; valid ones are auto, ehvi, parego, pfi, ehvi_pfi."):
        MultiObjectiveBO(nb201, factory, 0, Goals.parse(["test_acc:max", "flops_m:min"]), acquisition="kg")
    impossible = Goals.parse(["test_acc:max"], ["flops_m<=1"], ["flops_m"])
    with pytest.raises(NASError, match="No member of search space 'nb201' satisfies flops_m<=1"):
        MultiObjectiveRandom(nb201, 0, impossible, known)


def test_ensemble_bo_searches_a_front_in_a_space_too_large_to_enumerate(tiny_ensemble: dict[str, object]) -> None:
    """DARTS cells (NAS-Bench-301): candidates come from a pool of random members and
    mutations of the front; the cost is a function of the cell the surrogate can learn."""
    from nas.spaces.nb301 import NB301Space
    from nas.surrogate.model import EnsembleSurrogate

    space = NB301Space()
    goals = Goals.parse(["accuracy:max", "cost:min"])
    factory = lambda **kw: EnsembleSurrogate(**{**tiny_ensemble, **kw})  # noqa: E731
    strategy = MultiObjectiveBO(space, factory, 0, goals, pretraining="none", batch_size=4, initial_points=6, pool_size=500)
    proposed: list[tuple[int, ...]] = []
    while len(proposed) < 22:
        encodings = strategy.ask(None)
        codes = torch.tensor(encodings, dtype=torch.long)
        assert all(space.parse(space.to_string(e)) == e for e in encodings)  # valid members (parse checks the conditions)
        accuracy = (codes == 1).double().mean(1)  # any deterministic trade-off of the cell's choices
        cost = (codes.double() + 1).log().sum(1)
        strategy.tell(encodings, torch.stack([accuracy, cost], 1).tolist())
        proposed += encodings
    assert len(set(proposed)) == len(proposed)  # never the same member twice
    assert strategy.front_indices()


def test_optuna_multi_objective_sampler_proposes_distinct_members(nb201: NB201Space, columns: dict[str, torch.Tensor]) -> None:
    goals = Goals.parse(["test_acc:max", "flops_m:min"], ["params_m<=0.5"])
    table = torch.stack([columns[n] for n in goals.columns], 1)
    study = OptunaMultiObjective(nb201, 0, goals, sampler="nsga2", population_size=8)
    evaluated = _run(study, table, nb201, 20)
    assert evaluated.unique().numel() == 20
    assert len(study.study.study.trials) >= 20 and study.study.study.directions[1].name == "MINIMIZE"


# ---------------------------------------------------------------------- benchmark
def _config(tmp_path: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("benchmark", overrides=[f"output_dir={tmp_path}", "workers=1", "seeds=1", "budget=50", *FAST_ENSEMBLE, *overrides])


def test_front_benchmark_reports_hypervolume_and_front_share_in_both_modes(tmp_path: Path, nb201: NB201Space, columns: dict[str, torch.Tensor]) -> None:
    cfg = _config(tmp_path, "objectives=[test_acc:max,flops_m:min]", "known=[flops_m]", "multiobjective.include=[random,nsga2]", "multiobjective.known_include=[random]")
    run_front_benchmark(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["strategies"]) == {"random", "nsga2", "random+known"} and results["front_size"] == 14
    for records in results["strategies"].values():
        (record,) = records
        assert set(record["hypervolume_ratio"]) == {"50"} and record["hypervolume_ratio"]["50"] == record["ratio_trace"][4]
    # The scores are those of what the strategy evaluated: random search's 50, replayed here.
    for name, known in (("random", None), ("random+known", ["flops_m"])):
        goals = Goals.parse(["test_acc:max", "flops_m:min"], known=known)
        table = torch.stack([columns[n] for n in goals.columns], 1)
        costs = KnownCosts(nb201, {"flops_m": columns["flops_m"]}) if known else None
        evaluated = _run(MultiObjectiveRandom(nb201, 0, goals, costs), table, nb201, 50)
        ratio, share = FrontTruth(nb201, columns, goals).score(evaluated)
        (record,) = results["strategies"][name]
        assert (record["hypervolume_ratio"]["50"], record["front_share"]["50"]) == pytest.approx((ratio, share))
    assert "HV ratio @50" in (tmp_path / "results.md").read_text()


def test_constrained_benchmark_counts_evaluations_to_the_feasible_optimum(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "objectives=[test_acc:max]", "constraints={flops_m:16}", "known=[flops_m]", "multiobjective.include=[]", "multiobjective.known_include=[random]", "budget=729")
    run_benchmark(cfg)  # dispatched by the objectives
    results = json.loads((tmp_path / "results.json").read_text())
    (record,) = results["strategies"]["random+known"]
    # 729 members meet the budget: random search without replacement finds their best within them.
    assert record["evals_to_optimum"] is not None and 1 <= record["evals_to_optimum"] <= 729
    # Their best is one of the 90 identity cells; the first of those comes no later.
    assert results["optimum_twins"] == 90 and results["optimum_functions"] == 1
    assert 1 <= record["evals_to_optimum_twins"] <= record["evals_to_optimum"]
    assert "one of 90 twins" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objectives=[test_acc:max,latency_ms:min]"], "has no column or metric 'latency_ms'; valid ones are test_acc, val_acc, flops_m, params_m"),
        (["objectives=[test_acc:up]"], "direction 'up'; a direction is max or min"),
        (["objectives=[test_acc:max]", "constraints={flops_m:2}"], r"No member of the table satisfies flops_m<=2 \(best member: 15.5661\)"),
        (["objectives=[test_acc:max]", "multiobjective.include=[annealing]"], "Unknown strategy 'annealing'; valid multi-objective strategies are mobo"),
        # Known columns are handed over for every member before any evaluation: never the answer.
        (["objectives=[test_acc:max,flops_m:min]", "known=[test_acc]"], "Known column 'test_acc' is the searched objective"),
        (["objectives=[test_acc:max,flops_m:min]", "known=[flops_m,val_acc]"], r"Known column 'val_acc' comes from the results table cifar10.csv.*extra_tables \(flops_m, params_m\)"),
    ],
)
def test_front_benchmark_bad_input(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(NASError, match=message):
        run_benchmark(_config(tmp_path, *overrides))


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("constraints=[latency_ms<=5,params_m<=3]", 'constraints=["latency_ms<=5","params_m<=3"]'),
        ("+constraints=flops_m<=16", '+constraints=["flops_m<=16"]'),
        ("constraints=[accuracy>=0.9]", 'constraints=["accuracy>=0.9"]'),
        ('constraints=["flops_m<=16"]', 'constraints=["flops_m<=16"]'),
        ("constraints={flops_m:16}", "constraints={flops_m:16}"),
        ("objectives=[test_acc:max]", "objectives=[test_acc:max]"),
    ],
)
def test_budget_comparisons_need_no_quotes_on_the_command_line(arg: str, quoted: str) -> None:
    from nas.cli import quote_comparisons

    assert quote_comparisons(["nas.benchmark", arg]) == ["nas.benchmark", quoted]


def test_front_benchmark_command_line_error_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nas.benchmark", "objectives=[test_acc:max,watts:min]", f"output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: The table cifar10.csv with its extra tables has no column or metric 'watts'")
    # An unquoted comparison reaches the goals (here: a budget no member meets), not Hydra's lexer.
    result = subprocess.run(
        [sys.executable, "-m", "nas.benchmark", "objectives=[test_acc:max]", "constraints=[flops_m<=2]", f"output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: No member of the table satisfies flops_m<=2")


def test_inverse_copula_returns_observed_values_and_extends_their_tails(nb201: NB201Space) -> None:
    from nas.surrogate.model import EnsembleSurrogate

    surrogate = EnsembleSurrogate(nb201, members=2, trunk=(8,), head_hidden=8, pretraining="none")
    observed = torch.tensor([10.0, 80.0, 85.0, 90.0, 91.0, 93.0, 94.0, 94.2], dtype=torch.float64)
    surrogate.fit(nb201.all_codes[:8], observed, epochs=1)
    units = surrogate.normalise(observed).double()
    assert torch.allclose(inverse_copula(units, observed), observed, atol=1e-4)
    beyond = inverse_copula(torch.tensor([float(units.max()) + 0.5, float(units.min()) - 0.5]), observed)
    assert beyond[0] > 94.2 and beyond[1] < 10.0
