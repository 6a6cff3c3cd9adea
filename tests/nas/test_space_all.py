"""What every thesis search space must do: configs, sampling, mutation, building and
running members, string round trips, features, zero-cost profiling and clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from models.profiling import count_parameters
from models.reparam import reparameterize_model
from nas.errors import NASError
from nas.space import SearchSpace
from nas.spaces import SPACES, build_space
from nas.costs.zero_cost import compute_zero_cost

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NAMES = ("mobileone", "swiftformer_hybrid", "moat_hybrid", "attention")


@pytest.fixture(scope="module")
def spaces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SearchSpace]:
    """Each space at a tiny resolution; the attention space matches FLOPs (deterministic, fast)."""
    cache = tmp_path_factory.mktemp("widths")
    extra: dict[str, dict[str, object]] = {"attention": {"match": "flops", "cache_dir": str(cache)}}
    return {name: build_space(name, resolution=32, **extra.get(name, {})) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_config_builds_the_registered_space_with_its_defaults(name: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=None, overrides=[f"+searchspace={name}"])["searchspace"]
    space = build_space(**cfg)
    assert isinstance(space, SPACES[name])
    assert space.signature() == SPACES[name]().signature()


@pytest.mark.parametrize("name", NAMES)
def test_random_members_mutate_build_run_and_fuse_exactly(spaces: dict[str, SearchSpace], name: str) -> None:
    space = spaces[name]
    generator = torch.Generator().manual_seed(3)
    for row in space.sample(2, generator).tolist():
        parent = space.validate(row)
        child = space.mutate(parent, generator)
        assert sum(a != b for a, b in zip(parent, child)) == 1
        assert bool(space.valid_mask(torch.tensor([child]))[0])
        model = space.to_module(child, num_classes=7).eval()
        x = space.sample_input(2)
        with torch.no_grad():
            out = model(x)
            fused = reparameterize_model(model)(x)
        assert out.shape == (2, 7) and torch.isfinite(out).all()
        torch.testing.assert_close(fused, out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_enumeration_is_the_valid_members_each_once(spaces: dict[str, SearchSpace], name: str) -> None:
    space = spaces[name]
    codes = space.all_codes
    assert space.valid_mask(codes).all()
    assert torch.unique(codes, dim=0).shape[0] == space.size
    assert torch.equal(space.index_of(codes[::101]), torch.arange(0, space.size, 101))
    for row in codes[:: max(1, space.size // 40)].tolist():
        assert space.parse(space.to_string(row)) == tuple(row)


@pytest.mark.parametrize("name", NAMES)
def test_features_are_vectorised_float_and_tell_members_apart(spaces: dict[str, SearchSpace], name: str) -> None:
    space = spaces[name]
    features = space.features(space.all_codes)
    assert features.dtype == torch.float32 and features.shape[0] == space.size
    assert torch.isfinite(features).all()
    assert torch.unique(features, dim=0).shape[0] == space.size
    rows = torch.tensor([5, 0, space.size - 1])
    assert torch.equal(space.features(space.all_codes[rows]), features[rows])


@pytest.mark.parametrize("name", NAMES)
def test_zero_cost_preprocessing_profiles_real_networks(spaces: dict[str, SearchSpace], name: str) -> None:
    space = spaces[name]
    data = compute_zero_cost(space, num_samples=2, seed=0, warmup=0, repetitions=1)
    assert data.values.shape == (2, 4) and (data.values > 0).all()
    assert data.signature == space.signature()
    first = tuple(data.codes[0].tolist())
    assert data.values[0, 0] == count_parameters(space.to_module(first))


@pytest.mark.parametrize("name", NAMES)
def test_malformed_strings_and_out_of_range_codes_are_refused(spaces: dict[str, SearchSpace], name: str) -> None:
    space = spaces[name]
    text = space.to_string(tuple(space.all_codes[0].tolist()))
    first = space.variable_names[0]
    tokens = text.split()
    bad_value = " ".join([f"{first}=bogus", *tokens[1:]])
    with pytest.raises(NASError, match=f"Variable '{first}' of search space '{name}' takes the values .*, got 'bogus'"):
        space.parse(bad_value)
    with pytest.raises(NASError, match="'colour=red' is not 'variable=value'"):
        space.parse(text + " colour=red")
    with pytest.raises(NASError, match=f"missing {space.variable_names[-1]}"):
        space.parse(text.rsplit(" ", 1)[0])
    too_big = list(space.all_codes[0].tolist())
    too_big[0] = len(space.choices[0])
    with pytest.raises(NASError, match=f"Variable '{first}' of search space '{name}' takes codes 0..{len(space.choices[0]) - 1}"):
        space.validate(too_big)
    with pytest.raises(NASError, match=f"has {space.num_variables} variables"):
        space.validate(too_big[:-1])


def test_unknown_space_lists_every_registered_one() -> None:
    with pytest.raises(NASError, match="Unknown search space 'mobiletwo'; valid search spaces are") as error:
        build_space("mobiletwo")
    assert all(name in str(error.value) for name in NAMES)
