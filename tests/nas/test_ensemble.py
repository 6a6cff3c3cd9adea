"""The vectorised deep ensemble and the surrogate around it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from nas.costs.zero_cost import ZeroCostData
from nas.errors import NASError
from nas.spaces.nb201 import NB201Space
from nas.surrogate import DeepEnsemble, EnsembleSurrogate


def _member_forward(ensemble: DeepEnsemble, member: int, x: torch.Tensor, head: str) -> torch.Tensor:
    """The same network as member ``member``, computed one layer at a time without batching."""
    h = x
    for layer in ensemble.trunk:
        h = h @ layer.weight[member] + layer.bias[member, 0]
        h = F.silu(F.layer_norm(h, h.shape[-1:], layer.norm_weight[member, 0], layer.norm_bias[member, 0]))
    block = ensemble.heads[head]
    hidden = block.hidden
    h = h @ hidden.weight[member] + hidden.bias[member, 0]
    h = F.silu(F.layer_norm(h, h.shape[-1:], hidden.norm_weight[member, 0], hidden.norm_bias[member, 0]))
    return (h @ block.out_weight[member] + block.out_bias[member, 0]).squeeze(-1)


def test_batched_members_equal_separate_networks() -> None:
    ensemble = DeepEnsemble(12, ["a", "b"], members=4, trunk=(16, 24), head_hidden=8, seed=0)
    x = torch.randn(50, 12)
    predictions = ensemble.predict(x, "b", chunk_size=7)
    assert predictions.shape == (4, 50)
    for m in range(4):
        assert torch.allclose(predictions[m], _member_forward(ensemble, m, x, "b"), atol=1e-5)


def test_members_are_initialised_independently_and_reproducibly() -> None:
    x = torch.randn(20, 8)
    a = DeepEnsemble(8, ["y"], members=3, trunk=(16,), head_hidden=8, seed=1).predict(x, "y")
    b = DeepEnsemble(8, ["y"], members=3, trunk=(16,), head_hidden=8, seed=1).predict(x, "y")
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])


def test_fit_learns_a_function_and_ignores_missing_targets() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(256, 4, generator=generator)
    y = (x[:, 0] * 2 - x[:, 1]).unsqueeze(1)
    targets = torch.cat([y, torch.full_like(y, float("nan"))], 1)  # second head: no data at all
    ensemble = DeepEnsemble(4, ["y", "unused"], members=3, trunk=(32, 32), head_hidden=32, seed=0)
    before = F.mse_loss(ensemble.predict(x, "y").mean(0), y[:, 0])
    ensemble.fit(x, targets, ["y", "unused"], epochs=60, batch_size=32, lr=5e-3)
    after = F.mse_loss(ensemble.predict(x, "y").mean(0), y[:, 0])
    assert after < 0.1 * before
    assert torch.isfinite(ensemble.predict(x, "unused")).all()


def test_a_random_prior_adds_disagreement_away_from_the_observations_only() -> None:
    """Members with random priors fit the observations as well as members without, and
    disagree more where nothing was observed; the metric heads added later have no prior."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(40, 6, generator=generator) * 0.3  # observations in one corner
    far = 0.7 + torch.rand(500, 6, generator=generator) * 0.3  # the opposite corner
    y = x.sum(1) - 0.4
    spread = {}
    for scale in (0.0, 1.0):
        ensemble = DeepEnsemble(6, ["hi"], members=6, trunk=(32, 32), head_hidden=32, seed=0, prior_scale=scale)
        ensemble.fit(x, y, ["hi"], epochs=300, batch_size=20, lr=5e-3)
        near = ensemble.predict(x, "hi")
        assert F.mse_loss(near.mean(0), y) < 0.01
        assert torch.allclose(near, ensemble(x, ["hi"])["hi"], atol=1e-5)  # scoring and training agree
        spread[scale] = ensemble.predict(far, "hi").std(0).mean()
        ensemble.add_head("metric:flops")
        assert "metric:flops" not in ensemble.prior_heads
    assert spread[1.0] > 2 * spread[0.0]


def test_without_a_prior_the_ensemble_is_drawn_as_before() -> None:
    x = torch.randn(20, 8)
    a = DeepEnsemble(8, ["y"], members=3, trunk=(16,), head_hidden=8, seed=1)
    b = DeepEnsemble(8, ["y"], members=3, trunk=(16,), head_hidden=8, seed=1, prior_scale=0.5)
    assert b.prior is not None and a.prior is None
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # the prior has its own draws
    assert not torch.allclose(a.predict(x, "y"), b.predict(x, "y"))


def test_a_negative_prior_scale_is_refused(nb201: NB201Space) -> None:
    with pytest.raises(NASError, match="prior_scale must be >= 0"):
        EnsembleSurrogate(nb201, prior_scale=-1.0)


def test_simultaneous_pretraining_learns_every_metric(nb201: NB201Space, small_zero_cost: ZeroCostData) -> None:
    surrogate = EnsembleSurrogate(nb201, members=3, trunk=(64, 64), head_hidden=64, pretraining="simultaneous", pretrain_epochs=150, pretrain_batch_size=16, seed=0)
    surrogate.pretrain(small_zero_cost)
    x = nb201.features(small_zero_cost.codes)
    for j, metric in enumerate(small_zero_cost.metrics):
        if metric == "latency_ms":
            continue  # one timed pass per network in this fixture: too noisy to rank
        predicted = surrogate.ensemble.predict(x, f"metric:{metric}").mean(0)
        assert spearmanr(predicted.numpy(), small_zero_cost.values[:, j].numpy()).statistic > 0.9, metric


def test_sequential_and_no_pretraining(nb201: NB201Space, small_zero_cost: ZeroCostData) -> None:
    x = nb201.features(nb201.all_codes[:10])
    untouched = EnsembleSurrogate(nb201, members=2, trunk=(16,), head_hidden=8, pretraining="none", seed=0)
    before = untouched.ensemble.embed(x).detach().clone()
    untouched.pretrain(small_zero_cost)
    assert torch.equal(before, untouched.ensemble.embed(x).detach())
    sequential = EnsembleSurrogate(nb201, members=2, trunk=(16,), head_hidden=8, pretraining="sequential", pretrain_epochs=2, seed=0)
    sequential.pretrain(small_zero_cost)
    assert not torch.allclose(before, sequential.ensemble.embed(x).detach())
    assert {f"metric:{m}" for m in small_zero_cost.metrics} <= set(sequential.ensemble.heads)
    with pytest.raises(NASError, match="valid modes are simultaneous, sequential, none"):
        EnsembleSurrogate(nb201, pretraining="joint")


@pytest.mark.parametrize("transform", ["copula", "standardize"])
def test_target_transforms_preserve_order(nb201: NB201Space, transform: str) -> None:
    surrogate = EnsembleSurrogate(nb201, members=2, trunk=(8,), head_hidden=8, fit_epochs=1, target_transform=transform)
    values = torch.tensor([10.0, 93.0, 94.0, 50.0, 93.5])
    surrogate.fit(nb201.all_codes[:5], values)
    z = surrogate.normalise(values)
    assert torch.equal(torch.argsort(z), torch.argsort(values))
    if transform == "copula":  # ranks, not distances: the outlier at 10 does not squash the top
        assert torch.allclose(z.sort().values, -z.sort().values.flip(0), atol=1e-5)


def test_the_objective_head_starts_from_a_positively_correlated_metric_head_only(nb201: NB201Space, small_zero_cost: ZeroCostData) -> None:
    surrogate = EnsembleSurrogate(nb201, members=2, trunk=(16,), head_hidden=8, pretraining="simultaneous", pretrain_epochs=3, head_init="best_metric", seed=0)
    surrogate.pretrain(small_zero_cost)
    codes = small_zero_cost.codes[:12]
    x = nb201.features(codes)
    params = surrogate.ensemble.predict(x, "metric:params").mean(0)
    # Observations that rank exactly against the params head: negating a head is never a start.
    anti = -params.double()
    rho = surrogate.metric_correlations(codes, anti)
    start = max((h for h in rho if rho[h] > 0), key=rho.__getitem__, default=None)
    fresh = surrogate.ensemble.predict(x, "hi")
    surrogate._start_from_metric_head(codes, anti, "hi")
    if start is None:
        assert torch.equal(surrogate.ensemble.predict(x, "hi"), fresh)  # left as initialised
    else:
        assert start != "metric:params" and torch.equal(surrogate.ensemble.predict(x, "hi"), surrogate.ensemble.predict(x, start))
    # A cost to minimise (FLOPs, say: its values oriented by -1) starts from the head that
    # ranks it in its own units, negated like its values: a known sign, not one fitted to noise.
    rho_raw = surrogate.metric_correlations(codes, params.double())
    best_raw = max(rho_raw, key=rho_raw.__getitem__)
    surrogate._start_from_metric_head(codes, anti, "cost", orientation=-1.0)
    assert torch.allclose(surrogate.ensemble.predict(x, "cost"), -surrogate.ensemble.predict(x, best_raw))
    # Observations ranked like the params head start from a positively correlated head.
    surrogate._start_from_metric_head(codes, params.double(), "lo")
    rho = surrogate.metric_correlations(codes, params.double())
    best = max(rho, key=rho.__getitem__)
    assert rho[best] > 0.99 and torch.equal(surrogate.ensemble.predict(x, "lo"), surrogate.ensemble.predict(x, best))
