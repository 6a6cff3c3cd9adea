"""Zero-cost proxies on real NAS-Bench-201 networks, and their place in the zero-cost data."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from nas.errors import NASError
from nas.objectives import TableObjective
from nas.costs.proxies import PROXIES, compute_proxies, gaussian_batch
from nas.spaces.nb201 import NB201Space
from nas.surrogate import EnsembleSurrogate
from nas.costs.zero_cost import ZeroCostData, compute_zero_cost, load_or_compute_zero_cost, rank_normalise, zero_cost_from_config

ALL_NONE = (0, 0, 0, 0, 0, 0)
ALL_CONV = (3, 3, 3, 3, 3, 3)


@pytest.fixture(scope="module")
def small_space() -> NB201Space:
    """The NAS-Bench-201 cell in a small network: 8 channels, 1 cell per stage, 16 px."""
    return NB201Space(channels=8, cells_per_stage=1, resolution=16)


@pytest.fixture(scope="module")
def batch(small_space: NB201Space):  # type: ignore[no-untyped-def]
    return gaussian_batch(small_space.sample_input(1), batch_size=16)


def _proxies(space: NB201Space, code: tuple[int, ...], batch) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return compute_proxies(lambda: space.to_module(code), PROXIES, space.sample_input(1), batch)


def test_every_proxy_is_finite_on_a_real_cell_and_missing_where_undefined(small_space: NB201Space, batch) -> None:  # type: ignore[no-untyped-def]
    scores = _proxies(small_space, ALL_CONV, batch)
    assert set(scores) == set(PROXIES)
    assert all(math.isfinite(v) for v in scores.values()), scores
    assert scores["synflow"] > 0 and scores["snip"] > 0 and scores["grad_norm"] > 0
    dead = _proxies(small_space, ALL_NONE, batch)
    # No signal crosses an all-'none' cell: the data proxies are undefined, not a crash.
    assert all(math.isnan(dead[name]) for name in ("naswot", "jacob_cov", "snip", "grad_norm")), dead


def test_proxies_are_deterministic_for_a_seed(small_space: NB201Space, batch) -> None:  # type: ignore[no-untyped-def]
    code = (3, 1, 2, 3, 0, 4)
    assert _proxies(small_space, code, batch) == _proxies(small_space, code, batch)


def test_synflow_and_naswot_rank_architectures_like_their_trained_accuracy(small_space: NB201Space, batch, table: TableObjective) -> None:  # type: ignore[no-untyped-def]
    codes = small_space.all_codes[torch.randperm(small_space.size, generator=torch.Generator().manual_seed(3))[:40]]
    truth = table.values[table.space.index_of(codes)].tolist()
    scores = [compute_proxies(lambda c=tuple(c): small_space.to_module(c), ["synflow", "naswot"], small_space.sample_input(1), batch) for c in codes.tolist()]
    for name in ("synflow", "naswot"):
        pairs = [(s[name], t) for s, t in zip(scores, truth) if math.isfinite(s[name])]
        rho = spearmanr([p for p, _ in pairs], [t for _, t in pairs]).statistic
        # Literature on NAS-Bench-201: about 0.75 for both; a broken proxy scores ~0.
        assert rho > 0.45, (name, rho)


def test_unknown_proxy_and_missing_data_are_clear_errors(small_space: NB201Space) -> None:
    with pytest.raises(NASError, match="Unknown zero-cost proxy 'zen'; valid proxies are synflow, naswot, jacob_cov, snip, grad_norm"):
        compute_proxies(lambda: small_space.to_module(ALL_CONV), ["zen"], small_space.sample_input(1), None)
    with pytest.raises(NASError, match="'naswot' needs a batch of data and none is given"):
        compute_proxies(lambda: small_space.to_module(ALL_CONV), ["synflow", "naswot"], small_space.sample_input(1), None)
    assert math.isfinite(compute_proxies(lambda: small_space.to_module(ALL_CONV), ["synflow"], small_space.sample_input(1), None)["synflow"])
    with pytest.raises(NASError, match="Unknown zero-cost metric 'zen'; valid metrics are params, "):
        compute_zero_cost(small_space, num_samples=2, metrics=["params", "zen"])


def _settings(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    base = dict(
        metrics=["params", "synflow"], num_samples=6, seed=0, warmup=0, repetitions=1, proxy_input="gaussian",
        proxy_batch_size=8, network={}, file=None, cache_dir=str(tmp_path),
    )
    return OmegaConf.create({**base, **overrides})


def test_a_cache_missing_a_proxy_computes_only_that_one(small_space: NB201Space, tmp_path: Path) -> None:
    first, path = zero_cost_from_config(small_space, _settings(tmp_path))
    assert first.metrics == ("params", "synflow") and path.exists()
    more, path_again = zero_cost_from_config(small_space, _settings(tmp_path, metrics=["synflow", "naswot", "params"]))
    assert path_again == path
    assert more.metrics == ("synflow", "naswot", "params")
    assert torch.equal(more.codes, first.codes)
    # What was there is kept as it was (not recomputed), and the file now holds all three.
    assert torch.equal(more.values[:, [2, 0]], first.values)
    assert ZeroCostData.load(path, small_space).metrics == ("params", "synflow", "naswot")


def test_zero_cost_metrics_shared_out_between_processes_are_those_of_one_process(small_space: NB201Space, tmp_path: Path) -> None:
    metrics = ["params", "flops", "synflow", "naswot"]  # all but latency, which is timed
    alone, _ = zero_cost_from_config(small_space, _settings(tmp_path / "one", metrics=metrics))
    shared, _ = zero_cost_from_config(small_space, _settings(tmp_path / "two", metrics=metrics, processes=2))
    assert torch.equal(shared.codes, alone.codes)
    assert torch.allclose(shared.values, alone.values, equal_nan=True)
    with pytest.raises(NASError, match="zero_cost.processes must be a whole number >= 1"):
        zero_cost_from_config(small_space, _settings(tmp_path / "none", processes=0))


def test_proxy_input_dataset_without_a_dataset_is_a_clear_error(small_space: NB201Space, tmp_path: Path) -> None:
    with pytest.raises(NASError, match="proxy_input=dataset needs a search with a dataset"):
        zero_cost_from_config(small_space, _settings(tmp_path, metrics=["naswot"], proxy_input="dataset"))
    with pytest.raises(NASError, match="valid inputs are auto, dataset, gaussian, none"):
        zero_cost_from_config(small_space, _settings(tmp_path, metrics=["naswot"], proxy_input="noise"))


def test_missing_proxies_are_masked_when_pretraining(small_space: NB201Space, tmp_path: Path) -> None:
    codes = torch.tensor([ALL_NONE, ALL_CONV, (3, 1, 2, 3, 0, 4), (1, 1, 1, 1, 1, 1), (2, 2, 2, 2, 2, 2), (4, 3, 2, 1, 3, 2)])
    data, _ = load_or_compute_zero_cost(
        small_space, tmp_path, metrics=["params", "naswot", "snip"], proxy_batch=gaussian_batch(small_space.sample_input(1), 8), shipped=None,
        warmup=0, repetitions=1, codes=codes,
    )
    assert torch.isnan(data.values[0, 1:]).all() and not torch.isnan(data.values[1:]).any()
    targets = rank_normalise(data.values)
    assert torch.isnan(targets[0, 1:]).all() and torch.isfinite(targets[1:]).all()
    surrogate = EnsembleSurrogate(small_space, members=2, trunk=(16,), head_hidden=16, pretrain_epochs=3, seed=0)
    surrogate.pretrain(data)
    for head in surrogate.metric_heads:
        assert torch.isfinite(surrogate.ensemble.predict(small_space.features(codes), head)).all()


def test_rank_normalise_keeps_order_ties_and_missing_values() -> None:
    values = torch.tensor([[1e40], [3.0], [float("nan")], [3.0], [-5.0]], dtype=torch.float64)
    out = rank_normalise(values)[:, 0]
    assert math.isnan(out[2])
    assert out[4] < out[1] == out[3] < out[0]
