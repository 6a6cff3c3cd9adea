"""Acquisition functions and batch selection."""
from __future__ import annotations

import pytest
import torch

from nas.acquisition import expected_improvement, probability_of_improvement, select_batch, upper_confidence_bound
from nas.errors import NASError

# 4 members x 5 candidates.
SAMPLES = torch.tensor(
    [
        [0.0, 2.0, 1.5, -1.0, 0.9],
        [0.1, 2.0, 0.5, -1.0, 1.1],
        [0.2, 0.0, 1.5, -1.0, 1.2],
        [0.3, 0.0, 0.5, -1.0, 1.3],
    ]
)


def test_probability_of_improvement_follows_the_predictive_distribution() -> None:
    pi = probability_of_improvement(SAMPLES, incumbent=1.0)
    mean, std = SAMPLES.double().mean(0), SAMPLES.double().std(0)
    # Candidate 1 (mean 1.0, wide spread) has PI ~ 0.5; candidate 4 (mean 1.125, narrow) more.
    assert pi[1] == pytest.approx(0.5, abs=1e-3)
    assert pi[4] == pytest.approx(float(torch.special.ndtr((mean[4] - 1.0) / std[4])), abs=1e-3)
    assert pi[2] == pytest.approx(0.5, abs=1e-3)
    # Below the incumbent PI is small but not zero, and selection still ranks candidates
    # whose PI underflows (it scores log PI).
    assert 0 < pi[0] < 1e-6 and pi[3] == 0
    only_low = torch.tensor([False, True, True, False, True])
    assert select_batch(SAMPLES, 1.0, 2, only_low, "pi").tolist() == [0, 3]


def test_expected_improvement_and_ucb() -> None:
    ei = expected_improvement(SAMPLES, incumbent=1.0)
    std1 = float(SAMPLES[:, 1].double().std())
    assert ei[1] == pytest.approx(std1 / (2 * torch.pi) ** 0.5, rel=1e-3)  # z = 0: sigma * phi(0)
    assert 0 < ei[0] < 1e-6 and ei[3] == 0
    ucb = upper_confidence_bound(SAMPLES, incumbent=0.0, beta=0.0)
    assert torch.allclose(ucb, SAMPLES.double().mean(0))


def test_pi_keeps_a_real_share_of_candidates_when_the_incumbent_tops_the_observations(nb201, table) -> None:  # type: ignore[no-untyped-def]
    """After fitting, the incumbent is the largest training target: counting members above
    it left 0-3 of 15,625 candidates with PI > 0 and the choice fell to the tie-break."""
    from nas.surrogate import EnsembleSurrogate

    rows = torch.randperm(nb201.size, generator=torch.Generator().manual_seed(0))[:60]
    surrogate = EnsembleSurrogate(nb201, members=6, trunk=(64, 64), head_hidden=64, fit_epochs=40, seed=0, pretraining="none")
    values = table.values[rows]
    surrogate.fit(nb201.all_codes[rows], values)
    samples = surrogate.predict(nb201.all_codes)
    incumbent = float(surrogate.normalise(values.max().unsqueeze(0))[0])
    counted = (samples > incumbent).double().mean(0)
    pi = probability_of_improvement(samples, incumbent)
    assert int((pi > 1e-3).sum()) >= 150  # at least 1 % of the space carries information
    assert int((pi > 1e-3).sum()) > 10 * max(1, int((counted > 0).sum()))


def test_believer_batch_differs_from_the_top_k_of_one_score() -> None:
    """Each pick raises the believed incumbent, so later slots favour uncertain candidates."""
    certain = torch.tensor([[1.0, 0.99, 0.98, 0.97, 0.2]]).repeat(6, 1)
    certain[:, 4] = torch.tensor([-1.5, 2.5, -1.5, 2.5, -1.5, 2.5])  # mean 0.5, very uncertain
    excluded = torch.zeros(5, dtype=torch.bool)
    picks = select_batch(certain, 0.0, 2, excluded, "pi").tolist()
    assert picks == [0, 4]


@pytest.mark.parametrize("acquisition", ["pi", "ei", "ucb", "thompson"])
def test_batches_are_distinct_and_skip_excluded_candidates(acquisition: str) -> None:
    samples = torch.randn(6, 200, generator=torch.Generator().manual_seed(0))
    excluded = torch.zeros(200, dtype=torch.bool)
    excluded[samples.mean(0).argsort(descending=True)[:20]] = True
    picks = select_batch(samples, 0.5, 30, excluded, acquisition, torch.Generator().manual_seed(1))
    assert picks.numel() == 30 and picks.unique().numel() == 30
    assert not excluded[picks].any()


@pytest.mark.parametrize("acquisition", ["pi", "thompson"])
def test_a_pick_takes_its_whole_group(acquisition: str) -> None:
    samples = torch.randn(6, 200, generator=torch.Generator().manual_seed(0))
    groups = torch.arange(200) % 7  # 7 groups, e.g. twins
    picks = select_batch(samples, 0.5, 10, torch.zeros(200, dtype=torch.bool), acquisition, torch.Generator().manual_seed(1), groups)
    assert picks.numel() == 7 and groups[picks].unique().numel() == 7  # one per group, then none left
    free = select_batch(samples, 0.5, 10, torch.zeros(200, dtype=torch.bool), acquisition, torch.Generator().manual_seed(1))
    assert picks[0] == free[0]  # the first pick is the same: groups only take the rest of the batch


def test_batch_is_truncated_when_the_space_runs_out() -> None:
    excluded = torch.tensor([True, False, True, False, True])
    assert sorted(select_batch(SAMPLES, 0.0, 10, excluded).tolist()) == [1, 3]


def test_unknown_acquisition_is_a_clear_error() -> None:
    with pytest.raises(NASError, match="valid acquisitions are pi, ei, ucb, mean, thompson"):
        select_batch(SAMPLES, 0.0, 2, torch.zeros(5, dtype=torch.bool), "kg")
