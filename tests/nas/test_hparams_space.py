"""Mixed spaces (integer, float, log, categorical, conditional) and products with architectures."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from nas.errors import NASError
from nas.spaces import build_space, space_from_config
from nas.spaces.hparams import Categorical, Float, Integer, MixedSpace
from nas.spaces.product import ProductSpace

LCBENCH_LIKE = {
    "batch_size": {"type": "int", "lower": 16, "upper": 512, "log": True},
    "learning_rate": {"type": "float", "lower": 1e-4, "upper": 0.1, "log": True},
    "momentum": {"type": "float", "lower": 0.1, "upper": 0.99},
    "num_layers": {"type": "int", "lower": 1, "upper": 5},
}


def conditional_space() -> MixedSpace:
    return MixedSpace([
        Categorical("optimizer", ["adamw", "sgd"]),
        Float("momentum", 0.5, 0.99, when={"optimizer": ["sgd"]}),
        Float("lr", 1e-4, 1.0, log=True, default=1e-2),
        Integer("layers", 1, 8),
    ], label="cond")


def test_strings_round_trip_and_values_snap_to_the_grid() -> None:
    space = MixedSpace(LCBENCH_LIKE, label="lcb")
    codes = space.sample(50, torch.Generator().manual_seed(0))
    for row in codes.tolist():
        assert space.parse(space.to_string(tuple(row))) == tuple(row)
    snapped = space.describe(space.parse("batch_size=100 learning_rate=0.00123 momentum=0.5 num_layers=3"))
    assert snapped["batch_size"] == 100 and snapped["num_layers"] == 3
    assert abs(snapped["learning_rate"] - 0.00123) / 0.00123 < 0.004  # 1,000 log steps over 3 decades: 0.7 % apart
    assert abs(snapped["momentum"] - 0.5) < 0.89 / 1000


def test_log_variables_are_sampled_log_uniformly_and_featured_on_their_scale() -> None:
    space = MixedSpace(LCBENCH_LIKE, label="lcb")
    codes = space.sample(20_000, torch.Generator().manual_seed(1))
    lr = space.values(codes)[:, 1]
    below = float((lr < 1e-3).double().mean())
    assert abs(below - 1 / 3) < 0.02  # one decade of three
    features = space.features(codes)
    assert features.shape == (20_000, 4) and float(features.min()) >= 0 and float(features.max()) <= 1
    expected = (torch.log(lr) - math.log(1e-4)) / (math.log(0.1) - math.log(1e-4))
    assert torch.allclose(features[:, 1].double(), expected, atol=1e-5)


def test_conditions_hold_inactive_variables_at_their_default() -> None:
    space = conditional_space()
    g = torch.Generator().manual_seed(2)
    codes = torch.cat([space.sample(500, g), space.mutate_codes(space.sample(500, g), g, steps=3), space.perturb(space.sample(500, g), g, 0.05)])
    assert bool(space.valid_mask(codes).all())
    adamw = codes[:, 0] == 0
    assert adamw.any() and (~adamw).any()
    assert bool((codes[adamw, 1] == space.from_config({"optimizer": "adamw", "lr": 0.01, "layers": 2})[1]).all())
    features = space.features(codes)
    assert bool((features[adamw, 2] == 0).all()) and bool((features[adamw, -1] == 0).all()) and bool((features[~adamw, -1] == 1).all())
    assert "momentum" not in space.to_string(tuple(codes[adamw][0].tolist()))
    with pytest.raises(NASError, match="sets momentum, which is active only when optimizer is sgd"):
        space.parse("optimizer=adamw momentum=0.9 lr=0.01 layers=2")
    with pytest.raises(NASError, match="lacks momentum"):
        space.parse("optimizer=sgd lr=0.01 layers=2")


def test_neighbours_and_mutations_are_local_and_valid() -> None:
    space = conditional_space()
    enc = space.parse("optimizer=sgd momentum=0.7 lr=0.01 layers=4")
    neighbours = space.neighbours(enc)
    assert bool(space.valid_mask(neighbours).all())
    differing = (neighbours != torch.tensor(enc)).sum(1)
    assert bool((differing >= 1).all())
    g = torch.Generator().manual_seed(3)
    moved = space.perturb(torch.tensor([enc]).repeat(200, 1), g, 0.01)
    assert bool((moved[:, 0] == enc[0]).all()) and bool((moved[:, 3] == enc[3]).all())  # categorical and... layers is numeric
    assert float((moved[:, 2] - enc[2]).abs().double().mean()) < 20  # 1 % of 1,000 steps


@pytest.mark.parametrize(("spec", "message"), [
    ({"x": {"type": "float", "lower": 1.0, "upper": 0.1}}, "lower bound 1 not below its upper bound 0.1"),
    ({"x": {"type": "float", "lower": 0.0, "upper": 1.0, "log": True}}, "log scale, which needs bounds above 0, got lower=0"),
    ({"x": {"type": "int", "lower": 1, "upper": 5, "default": 9}}, "default 9 of variable 'x' is outside its bounds 1..5"),
    ({"x": {"type": "categorical", "choices": ["a", "b"], "default": "c"}}, "default 'c' of variable 'x' is not one of its choices a, b"),
    ({"x": {"type": "float", "lower": 0.0, "upper": 1.0, "when": {"y": [1]}}}, "conditioned on 'y', which is not a variable of space 'h'; its variables are x"),
    ({"x": {"type": "real", "lower": 0.0, "upper": 1.0}}, "type 'real'; valid types are int, float, categorical"),
    ({"x": {"type": "float", "lower": 0.0, "upper": 1.0, "scale": "log"}}, "unknown setting 'scale'; valid settings are"),
    ({"x": {"type": "int", "lower": 0.5, "upper": 4}}, "integer variable, so its lower bound must be a whole number"),
    ({"o": {"type": "categorical", "choices": ["a", "b"]}, "x": {"type": "float", "lower": 0.0, "upper": 1.0, "when": {"o": ["z"]}}}, "Variable 'o' takes a, b, got 'z'"),
])
def test_bad_declarations_get_one_sentence(spec: dict, message: str) -> None:
    with pytest.raises(NASError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        MixedSpace(spec, label="h")
    assert "\n" not in str(error.value)


def test_product_space_joins_an_architecture_and_a_recipe() -> None:
    cfg = OmegaConf.create({"searchspace": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8}, "hparams": {"label": "hparams", "variables": LCBENCH_LIKE}})
    space = space_from_config(cfg)
    assert isinstance(space, ProductSpace) and not space.enumerable
    codes = space.sample(20, torch.Generator().manual_seed(4))
    text = space.to_string(tuple(codes[0].tolist()))
    assert " with batch_size=" in text and space.parse(text) == tuple(codes[0].tolist())
    assert set(space.hyperparameters(tuple(codes[0].tolist()))) == set(LCBENCH_LIKE)
    net = space.to_module(tuple(codes[0].tolist()))
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    keys = space.keys(codes)
    assert keys.unique().numel() == 20  # a product past int64's range is keyed by a hash
    # twins of the architecture with the same recipe are twins; another recipe is not
    arch = build_space("nb201", channels=4, cells_per_stage=1, resolution=8)
    same_function = arch.function_keys(arch.all_codes)
    pair = next((i, j) for i in range(200) for j in range(i + 1, 200) if same_function[i] == same_function[j])
    recipe = codes[0, arch.num_variables :]
    twins = torch.stack([torch.cat([arch.all_codes[pair[0]], recipe]), torch.cat([arch.all_codes[pair[1]], recipe])])
    fk = space.function_keys(twins)
    assert fk[0] == fk[1] and space.keys(twins)[0] != space.keys(twins)[1]
    alone = space.parse("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")  # trained with the defaults
    assert space.hyperparameters(alone) == space.hparams.describe(tuple(space.hparams.default_codes.tolist()))


def test_bo_searches_a_mixed_space_better_than_random_search() -> None:
    """BO (sampled pool, mutations and local refinement of continuous variables) on an
    analytic function of a log-scaled and linear variables, against random search."""
    from nas.search import run_search
    from nas.strategies import RandomSearch
    from nas.strategies.bo import BayesianOptimization
    from nas.surrogate.model import EnsembleSurrogate
    from nas.trial import Evaluation

    space = MixedSpace(LCBENCH_LIKE, label="lcb")

    class Bowl:
        def evaluate(self, encoding, fidelity="hi"):  # noqa: ANN001, ANN202
            v = space.describe(encoding)
            value = -(math.log10(v["learning_rate"]) + 2.3) ** 2 - 4 * (v["momentum"] - 0.8) ** 2 - 0.1 * (math.log2(v["batch_size"]) - 6) ** 2 - 0.05 * (v["num_layers"] - 2) ** 2
            return Evaluation(value, cost=1.0)

    results = {}
    for name, strategy in {
        "bo": BayesianOptimization(space, EnsembleSurrogate, seed=0, pretraining="none", batch_size=1, pool_size=2000, initial_points=8),
        "random": RandomSearch(space, seed=0),
    }.items():
        history = run_search(strategy, Bowl(), 40)
        results[name] = max(e.value for e in history.evaluations)
    assert results["bo"] > results["random"]
    assert results["bo"] > -0.2  # near the optimum 0 (random search: -0.40)


def test_a_prior_weight_draws_that_share_of_samples_near_the_defaults() -> None:
    uniform = MixedSpace(LCBENCH_LIKE, label="lcb")
    prior = MixedSpace(LCBENCH_LIKE, label="lcb", prior_weight=0.5, prior_spread=0.02)
    g = torch.Generator().manual_seed(6)
    default_lr = float(prior.values(prior.default_codes.unsqueeze(0))[0, 1])
    near = lambda space: float(((space.values(space.sample(10_000, g))[:, 1] / default_lr).log().abs() < 0.35).double().mean())  # noqa: E731
    assert abs(near(uniform) - 0.10) < 0.02  # a window of 0.7 in the log of a 1,000-fold range (6.9)
    assert 0.5 < near(prior) < 0.6  # half within 2.5 SD of the default, plus the uniform half's 0.05
    assert prior.signature() != uniform.signature()
    with pytest.raises(NASError, match="prior_weight is the share of samples drawn near the defaults, between 0 and 1, got 2"):
        MixedSpace(LCBENCH_LIKE, prior_weight=2)


def test_a_product_reads_the_zero_cost_data_of_its_architectures(tmp_path) -> None:  # noqa: ANN001
    """Zero-cost metrics describe the network: a product searches with the architecture
    space's cached data, each architecture paired with a recipe, and computes nothing new."""
    from nas.costs.zero_cost import zero_cost_from_config, zero_cost_ready

    settings = OmegaConf.create({"metrics": ["params", "flops"], "num_samples": 12, "seed": 0, "warmup": 0, "repetitions": 1, "cache_dir": str(tmp_path), "proxy_input": "none"})
    cfg = OmegaConf.create({"searchspace": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8}, "hparams": {"variables": LCBENCH_LIKE}})
    product, architecture = space_from_config(cfg), build_space("nb201", channels=4, cells_per_stage=1, resolution=8)
    plain, plain_path = zero_cost_from_config(architecture, settings)
    assert zero_cost_ready(product, settings, has_dataset=False)
    lifted, path = zero_cost_from_config(product, settings)
    assert path == plain_path and sorted(p.name for p in tmp_path.iterdir()) == [plain_path.name]
    assert lifted.codes.shape == (12, product.num_variables) and torch.equal(lifted.codes[:, : architecture.num_variables], plain.codes)
    assert bool(product.valid_mask(lifted.codes).all()) and torch.equal(lifted.values, plain.values) and lifted.signature == product.signature()


def test_zero_cost_pretraining_on_a_space_without_networks_is_refused_in_one_sentence() -> None:
    from nas.costs.zero_cost import zero_cost_from_config

    settings = OmegaConf.create({"metrics": ["params"], "num_samples": 4, "seed": 0, "cache_dir": "/nonexistent"})
    with pytest.raises(NASError, match=r"space 'lcb' holds hyperparameters only; search it without pretraining \(strategy.pretraining=none\)"):
        zero_cost_from_config(MixedSpace(LCBENCH_LIKE, label="lcb"), settings)
